"""Active-learning campaigns: what the authenticated campaign services write.

A campaign looks for spectra of a target class.  A person seeds it with
positives; each iteration shows the uncertain, random and candidate sets
(:mod:`vo_services.active_learning`) chosen by a model retrained on every
label so far, which scores the whole archive; the scores are published with
the model's version.  Tables (RD ``make_campaigns``, read-only in TAP):
``retrspect.campaigns``, ``campaign_batches``, ``labels``,
``campaign_scores``.

No label is ever lost or overwritten:

* each label is one committed row, keyed by an identifier the client
  chooses, so a request HAProxy re-sends (a process died under it) or a
  person's double click is stored once;
* a changed label ("back") is a new row: a person's current label for a
  spectrum is their latest; people who disagree are all kept, and the
  training label is their majority (ties are left out);
* "next iteration" names the iteration it advances from, so a re-sent
  request does not advance twice; concurrent ones are serialised on the
  campaign's row.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict

import numpy as np

from retrspect.ingest.errors import RetrspectError
from retrspect.vo_services.active_learning import (LABELS, choose, fit,
                                                   proportion_interval, similarity_scores)

#: DaCHS group whose members may create campaigns, label and retrain
GROUP = "campaigners"
CAMPAIGN_ID = re.compile(r"^[a-z][a-z0-9_-]{1,39}$")
LABEL_ID = re.compile(r"^[A-Za-z0-9_.:-]{8,80}$")
#: the ids of the seeds' labels (no client may use them)
SEED_LABEL_PREFIX = "seed."
MAX_BATCH = 200
SCHEMA = "retrspect"
#: the campaign tables (RD ``make_campaigns``)
TABLES = ("campaigns", "campaign_batches", "labels", "campaign_scores")


class CampaignError(RetrspectError, ValueError):
    """A campaign request that cannot be carried out; the message says why."""


def _conn():
    from gavo import base
    return base.getWritableAdminConn()


def _rows(conn, query: str, args: dict | None = None) -> list[dict]:
    return list(conn.queryToDicts(query, args or {}))


def _campaign(conn, campaign_id: str, *, lock: str = "") -> dict:
    """The campaign's row; ``lock`` "UPDATE" (retraining) or "SHARE" (a
    label: it waits for a retraining and lands in the new iteration)."""
    rows = _rows(conn, f"SELECT * FROM {SCHEMA}.campaigns WHERE campaign_id = %(c)s"
                 + (f" FOR {lock}" if lock in ("UPDATE", "SHARE") else ""), {"c": campaign_id})
    if not rows:
        raise CampaignError(f"no campaign {campaign_id!r}")
    return rows[0]


def latent_features(spaces: list[str], conn=None) -> tuple[list[str], np.ndarray]:
    """obs_ids with a vector in every one of ``spaces``, and the
    concatenation of their vectors (the campaign model's input)."""
    from retrspect.vo_services.similarity import NoSpaceError, space_column
    if conn is None:
        with _conn() as conn:
            return latent_features(spaces, conn)
    vectors = []
    for space in spaces:
        try:
            column = space_column(space)
        except NoSpaceError as err:
            raise CampaignError(str(err)) from None
        vectors.append({row[0]: np.asarray(row[1], np.float64) for row in conn.query(
            f"SELECT obs_id, {column.column} FROM {column.table} "
            f"WHERE {column.column} IS NOT NULL")})
    ids = sorted(set.intersection(*(set(v) for v in vectors)))
    if not ids:
        return [], np.zeros((0, 0))
    return ids, np.array([np.concatenate([v[i] for v in vectors]) for i in ids])


# ---- create -----------------------------------------------------------------

def create(campaign_id: str, target_class: str, spaces: list[str], seeds: list[str],
           user: str, *, batch_size: int = 20, zoom: tuple[float, float] | None = None) -> dict:
    """Create a campaign seeded with positives and choose its first batch.
    Creating it again with the same seeds by the same user returns it."""
    if not CAMPAIGN_ID.match(campaign_id or ""):
        raise CampaignError("campaign_id: 2 to 40 characters, lower-case letters, "
                            "digits, - and _, starting with a letter")
    if not 3 <= batch_size <= MAX_BATCH:
        raise CampaignError(f"batch_size must be between 3 and {MAX_BATCH}")
    spaces = [s for s in dict.fromkeys(spaces) if s]
    seeds = [s for s in dict.fromkeys(seeds) if s]
    if not spaces:
        raise CampaignError("name at least one latent space")
    if not seeds:
        raise CampaignError("give at least one seed spectrum (an obs_id of a positive)")
    if zoom and not (zoom[0] < zoom[1]):
        raise CampaignError("the zoom region must start below its end")
    with _conn() as conn:
        # two creates of one name (a double submit, a re-sent request) wait
        # for each other here instead of racing to the primary key
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%(c)s))", {"c": campaign_id})
        existing = _rows(conn, f"SELECT * FROM {SCHEMA}.campaigns WHERE campaign_id = %(c)s",
                         {"c": campaign_id})
        if existing:
            seeded = {r["obs_id"] for r in _rows(
                conn, f"SELECT obs_id FROM {SCHEMA}.campaign_batches WHERE campaign_id = "
                "%(c)s AND iteration = 0", {"c": campaign_id})}
            if existing[0]["created_by"] != user or seeded != set(seeds):
                raise CampaignError(f"a campaign {campaign_id!r} exists already")
            if existing[0]["iteration"] > 0:
                return existing[0]          # the same request, re-sent
        else:
            _insert_campaign(conn, campaign_id, target_class, spaces, seeds, user,
                             batch_size, zoom)
    # iteration 0 -> 1 happens once, however many creates reach here
    return next_iteration(campaign_id, 0, user)


def _insert_campaign(conn, campaign_id, target_class, spaces, seeds, user,
                     batch_size, zoom) -> None:
    """The campaign's row, its seeds as iteration 0 and their labels."""
    ids, _ = latent_features(spaces, conn)
    known = set(ids)
    missing = [s for s in seeds if s not in known]
    if missing:
        raise CampaignError(f"seed spectra without a vector in every space of "
                            f"{', '.join(spaces)}: {', '.join(missing[:10])}")
    conn.execute(
        f"INSERT INTO {SCHEMA}.campaigns (campaign_id, target_class, spaces, zoom_min, "
        "zoom_max, batch_size, iteration, created_by, created) VALUES (%(c)s, %(t)s, "
        "%(s)s, %(lo)s, %(hi)s, %(b)s, 0, %(u)s, now() AT TIME ZONE 'UTC')",
        {"c": campaign_id, "t": target_class, "s": ",".join(spaces),
         "lo": zoom[0] if zoom else None, "hi": zoom[1] if zoom else None,
         "b": batch_size, "u": user})
    for position, obs_id in enumerate(seeds):
        conn.execute(
            f"INSERT INTO {SCHEMA}.campaign_batches (campaign_id, iteration, set_name, "
            "batch_position, obs_id) VALUES (%(c)s, 0, 'seed', %(p)s, %(o)s)",
            {"c": campaign_id, "p": position, "o": obs_id})
        _insert_label(conn, campaign_id, f"{SEED_LABEL_PREFIX}{campaign_id}.{obs_id}", 0,
                      obs_id, "yes", user)


# ---- labels -------------------------------------------------------------------

def _insert_label(conn, campaign_id, label_id, iteration, obs_id, label, user) -> None:
    conn.execute(
        f"INSERT INTO {SCHEMA}.labels (label_id, campaign_id, iteration, obs_id, label, "
        "labeller, labelled_at) VALUES (%(i)s, %(c)s, %(n)s, %(o)s, %(l)s, %(u)s, "
        "clock_timestamp() AT TIME ZONE 'UTC') ON CONFLICT (label_id) DO NOTHING",
        {"i": label_id, "c": campaign_id, "n": iteration, "o": obs_id, "l": label,
         "u": user})


def record_label(campaign_id: str, label_id: str, obs_id: str, label: str,
                 user: str) -> dict:
    """Store one label (committed when this returns).  A request repeated
    with the same ``label_id`` stores nothing new and returns the row."""
    if label not in LABELS:
        raise CampaignError(f"label must be one of {', '.join(LABELS)}")
    if not LABEL_ID.match(label_id or ""):
        raise CampaignError("label_id: 8 to 80 characters of letters, digits and . : _ -"
                            " (the client makes one per label it gives)")
    if label_id.startswith(SEED_LABEL_PREFIX):
        raise CampaignError(f"label_id must not start with {SEED_LABEL_PREFIX!r} "
                            "(the seeds' labels)")
    with _conn() as conn:
        campaign = _campaign(conn, campaign_id, lock="SHARE")
        shown = _rows(conn, f"SELECT 1 FROM {SCHEMA}.campaign_batches WHERE campaign_id = "
                      "%(c)s AND obs_id = %(o)s", {"c": campaign_id, "o": obs_id})
        if not shown:
            raise CampaignError(f"{obs_id!r} was not shown in campaign {campaign_id!r}")
        _insert_label(conn, campaign_id, label_id, campaign["iteration"], obs_id, label, user)
        row = _rows(conn, f"SELECT * FROM {SCHEMA}.labels WHERE label_id = %(i)s",
                    {"i": label_id})[0]
    if (row["campaign_id"], row["obs_id"], row["label"], row["labeller"]) != (
            campaign_id, obs_id, label, user):
        raise CampaignError(f"label_id {label_id!r} was used for another label")
    return row


def current_labels(conn, campaign_id: str) -> dict[str, dict[str, str]]:
    """obs_id -> {labeller: their latest label}."""
    latest: dict[str, dict[str, str]] = defaultdict(dict)
    for row in _rows(conn, f"SELECT obs_id, labeller, label FROM {SCHEMA}.labels "
                     "WHERE campaign_id = %(c)s ORDER BY labelled_at, label_id",
                     {"c": campaign_id}):
        latest[row["obs_id"]][row["labeller"]] = row["label"]
    return latest


def training_label(by_person: dict[str, str]) -> bool | None:
    """The majority of people's yes/no labels; None for a tie or none."""
    votes = Counter(v for v in by_person.values() if v in ("yes", "no"))
    if votes["yes"] == votes["no"]:
        return None
    return votes["yes"] > votes["no"]


# ---- next iteration -------------------------------------------------------------

def next_iteration(campaign_id: str, from_iteration: int, user: str) -> dict:
    """Retrain on every label so far, publish the model's scores for the
    whole archive, and choose the next batch.  Advances only from
    ``from_iteration`` (a re-sent request returns the campaign as it is)."""
    with _conn() as conn:
        campaign = _campaign(conn, campaign_id, lock="UPDATE")
        if campaign["iteration"] != from_iteration:
            return campaign
        spaces = campaign["spaces"].split(",")
        ids, features = latent_features(spaces, conn)
        index = {obs_id: n for n, obs_id in enumerate(ids)}
        labels = current_labels(conn, campaign_id)
        labelled = np.zeros(len(ids), bool)
        truth = {}
        for obs_id, by_person in labels.items():
            if obs_id in index:
                labelled[index[obs_id]] = True
                verdict = training_label(by_person)
                if verdict is not None:
                    truth[index[obs_id]] = verdict
        rows = np.array(sorted(truth), int)
        y = np.array([truth[r] for r in rows], bool)
        iteration = from_iteration + 1
        if len(y) and y.any() and not y.all():
            model = fit(features[rows], y)
            scores, version = model(features), model.version
            conn.execute(
                f"INSERT INTO {SCHEMA}.campaign_scores (campaign_id, model_version, "
                "iteration, obs_id, score) SELECT %(c)s, %(v)s, %(n)s, unnest(%(o)s), "
                "unnest(%(s)s) ON CONFLICT DO NOTHING",
                {"c": campaign_id, "v": version, "n": from_iteration, "o": ids,
                 "s": [float(s) for s in scores]})
        elif len(y) and y.any():    # only positives so far: closeness to them
            scores, version = similarity_scores(features, rows[y]), None
        else:                       # no positive left (seeds relabelled): no order
            scores, version = np.full(len(ids), 0.5), None
        rng = np.random.default_rng(
            int(hashlib.sha256(f"{campaign_id}:{iteration}".encode()).hexdigest()[:8], 16))
        sets = choose(scores, labelled, campaign["batch_size"], rng)
        position = 0
        for set_name, picks in sets.items():
            for pick in picks:
                conn.execute(
                    f"INSERT INTO {SCHEMA}.campaign_batches (campaign_id, iteration, "
                    "set_name, batch_position, obs_id, score) VALUES (%(c)s, %(n)s, %(s)s, "
                    "%(p)s, %(o)s, %(sc)s)",
                    {"c": campaign_id, "n": iteration, "s": set_name, "p": position,
                     "o": ids[pick], "sc": float(scores[pick])})
                position += 1
        conn.execute(f"UPDATE {SCHEMA}.campaigns SET iteration = %(n)s, model_version = "
                     "%(v)s WHERE campaign_id = %(c)s",
                     {"n": iteration, "v": version, "c": campaign_id})
        return _campaign(conn, campaign_id)


# ---- progress -------------------------------------------------------------------

def progress(campaign_id: str) -> list[dict]:
    """Per iteration: spectra shown and labelled, positives confirmed, and
    the random set's estimate of the class's frequency with its 95%
    interval (a random set of 20 mostly holds no member of a rare class:
    the interval says how little that tells)."""
    with _conn() as conn:
        _campaign(conn, campaign_id)
        labels = current_labels(conn, campaign_id)
        shown = _rows(conn, f"SELECT iteration, set_name, obs_id FROM {SCHEMA}."
                      "campaign_batches WHERE campaign_id = %(c)s", {"c": campaign_id})
    # a spectrum shown again (left unlabelled before) counts once: where it
    # was shown last
    last = {}
    for row in shown:
        last[row["obs_id"]] = max(last.get(row["obs_id"], -1), row["iteration"])
    out: dict[int, dict] = {}
    for row in shown:
        entry = out.setdefault(row["iteration"], {
            "iteration": row["iteration"], "shown": 0, "labelled": 0, "confirmed": 0,
            "random_n": 0, "random_yes": 0})
        entry["shown"] += 1
        if last[row["obs_id"]] != row["iteration"]:
            continue
        verdict = training_label(labels.get(row["obs_id"], {}))
        entry["labelled"] += bool(labels.get(row["obs_id"]))
        entry["confirmed"] += verdict is True
        if row["set_name"] == "random" and verdict is not None:
            entry["random_n"] += 1
            entry["random_yes"] += verdict
    for entry in out.values():
        entry["random_low"], entry["random_high"] = proportion_interval(
            entry["random_yes"], entry["random_n"])
    return [out[k] for k in sorted(out)]


# ---- the services' cores ----------------------------------------------------------

def _user(query_meta) -> str:
    """The authenticated user (the services are limited to :data:`GROUP`,
    so DaCHS checked the credentials before the core runs)."""
    from gavo import base
    user = query_meta["user"]
    if not user:
        raise base.ValidationError("log in (HTTP basic authentication) to write", "user")
    return user


def _answer(core, rows: list[dict]):
    from gavo import rsc
    names = {c.name for c in core.outputTable.columns}
    return rsc.TableForDef(core.outputTable, rows=[
        {k: v for k, v in row.items() if k in names} for row in rows])


def _split(text: str | None) -> list[str]:
    return [item for item in re.split(r"[\s,]+", text or "") if item]


def _core(core, field: str, work):
    """Run a service's work; a CampaignError becomes DaCHS's validation
    error on ``field`` (a DALI error document naming the problem)."""
    from gavo import base
    try:
        rows = work()
    except CampaignError as err:
        raise base.ValidationError(str(err), field) from None
    return _answer(core, rows)


def create_core(core, input_table, query_meta):
    param = input_table.getParam
    zoom = (param("zoom_min"), param("zoom_max"))
    return _core(core, "campaign_id", lambda: [create(
        param("campaign_id"), param("target_class") or "",
        _split(param("spaces")) or ["generic"], _split(param("seeds")), _user(query_meta),
        batch_size=param("batch_size") or 20, zoom=zoom if None not in zoom else None)])


def label_core(core, input_table, query_meta):
    param = input_table.getParam
    return _core(core, "label", lambda: [record_label(
        param("campaign_id"), param("label_id"), param("obs_id"), param("label"),
        _user(query_meta))])


def next_core(core, input_table, query_meta):
    param = input_table.getParam
    return _core(core, "campaign_id", lambda: [next_iteration(
        param("campaign_id"), param("from_iteration"), _user(query_meta))])


def progress_core(core, input_table, query_meta):
    return _core(core, "campaign_id", lambda: progress(input_table.getParam("campaign_id")))
