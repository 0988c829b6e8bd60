"""Active-learning campaigns against the running multi-process server:
who may write, labels that are never lost, the campaign model's published
scores."""
from __future__ import annotations

import secrets
import threading
import uuid

import numpy as np
import pytest
import requests
from process_kill import run_clients_through_a_kill

from retrspect.vo_services import server
from retrspect.vo_services.active_learning import fit
from retrspect.vo_services.campaigns import TABLES

SEEDS = ["miles_m0028", "miles_m0579"]


def _dachs_adm(*args):
    server.dachs("adm", *args)


@pytest.fixture(scope="module")
def users():
    """Two members of the campaigners group, removed afterwards (set-up
    creates none: the README says how to add one)."""
    made = {}
    for name in (f"t{secrets.token_hex(3)}", f"t{secrets.token_hex(3)}"):
        password = secrets.token_urlsafe(12)
        _dachs_adm("adduser", name, password)
        _dachs_adm("addtogroup", name, "campaigners")
        made[name] = password
    yield list(made.items())
    for name in made:
        _dachs_adm("deluser", name)


@pytest.fixture
def campaign_id(psql):
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    for table in TABLES:
        psql(f"DELETE FROM retrspect.{table} WHERE campaign_id = '{name}'")


def _call(base_url, service, auth=None, **params):
    response = requests.post(f"{base_url}/retrspect/q/{service}/api", auth=auth,
                             data={**params, "RESPONSEFORMAT": "json"}, timeout=120)
    return response


def _rows(response):
    assert response.status_code == 200, response.text[:400]
    assert response.headers["Content-Type"].startswith("application/json"), \
        response.text[:400]
    table = response.json()
    names = [c["name"] for c in table["columns"]]
    return [dict(zip(names, row)) for row in table["data"]]


def _create(base_url, user, campaign_id, **extra):
    return _rows(_call(base_url, "campaign_create", auth=user, campaign_id=campaign_id,
                       target_class="sun-like stars", seeds=",".join(SEEDS),
                       spaces="generic", batch_size="12", **extra))[0]


def _batch(tap, campaign_id, iteration):
    return [str(v) for v in tap.search(
        "SELECT obs_id FROM retrspect.campaign_batches WHERE campaign_id = "
        f"'{campaign_id}' AND iteration = {iteration} ORDER BY batch_position"
    ).to_table()["obs_id"]]


def test_anonymous_writes_are_refused_and_authenticated_ones_land(
        base_url, users, campaign_id, tap):
    for service in ("campaign_create", "campaign_label", "campaign_next"):
        assert _call(base_url, service, campaign_id=campaign_id).status_code == 401
    wrong = (users[0][0], "not-the-password")
    assert _call(base_url, "campaign_create", auth=wrong, campaign_id=campaign_id,
                 seeds=SEEDS[0]).status_code == 401
    assert len(tap.search(f"SELECT * FROM retrspect.campaigns WHERE campaign_id = "
                          f"'{campaign_id}'").to_table()) == 0
    created = _create(base_url, users[0], campaign_id, zoom_min="6519", zoom_max="6732")
    assert created["iteration"] == 1 and created["created_by"] == users[0][0]
    # public in TAP: the seeds as labels, the first batch
    labels = tap.search("SELECT obs_id, label, labeller FROM retrspect.labels WHERE "
                        f"campaign_id = '{campaign_id}'").to_table()
    assert sorted(map(str, labels["obs_id"])) == sorted(SEEDS)
    assert set(map(str, labels["label"])) == {"yes"}
    batch = _batch(tap, campaign_id, 1)
    assert len(batch) == 12 and not set(batch) & set(SEEDS)
    # created again by the same person with the same seeds: the same campaign
    assert _create(base_url, users[0], campaign_id)["created"] == created["created"]
    other = _call(base_url, "campaign_create", auth=users[1], campaign_id=campaign_id,
                  seeds=SEEDS[0])
    assert "exists already" in other.text


def test_a_double_submitted_create_makes_one_campaign(base_url, users, campaign_id, psql):
    answers = []

    def submit():
        answers.append(_create(base_url, users[0], campaign_id))

    threads = [threading.Thread(target=submit) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a["iteration"] for a in answers] == [1, 1, 1]
    assert psql("SELECT count(*) FROM retrspect.campaign_batches WHERE campaign_id = "
                f"'{campaign_id}' AND iteration = 1") == "12"
    seed_label = _call(base_url, "campaign_label", auth=users[1], campaign_id=campaign_id,
                       obs_id=SEEDS[0], label="no", label_id=f"seed.{campaign_id}.x")
    assert "must not start with 'seed.'" in seed_label.text


def test_labels_are_kept_changed_labels_add_rows_and_repeats_store_once(
        base_url, users, campaign_id, psql):
    _create(base_url, users[0], campaign_id)
    spectrum = psql("SELECT obs_id FROM retrspect.campaign_batches WHERE campaign_id = "
                    f"'{campaign_id}' AND iteration = 1 ORDER BY batch_position LIMIT 1")
    first = dict(campaign_id=campaign_id, obs_id=spectrum, label_id=f"l-{uuid.uuid4()}")
    for _ in range(3):      # a re-sent request (a retry, a double click)
        row = _rows(_call(base_url, "campaign_label", auth=users[0], label="yes", **first))[0]
        assert row["label"] == "yes" and row["labeller"] == users[0][0]
    back = dict(first, label_id=f"l-{uuid.uuid4()}")        # "back": changed to no
    _rows(_call(base_url, "campaign_label", auth=users[0], label="no", **back))
    _rows(_call(base_url, "campaign_label", auth=users[1], label="yes",
                **dict(first, label_id=f"l-{uuid.uuid4()}")))
    kept = psql("SELECT string_agg(labeller || ':' || label, ',' ORDER BY labelled_at) "
                f"FROM retrspect.labels WHERE campaign_id = '{campaign_id}' "
                f"AND obs_id = '{spectrum}'")
    assert kept == f"{users[0][0]}:yes,{users[0][0]}:no,{users[1][0]}:yes"
    reused = _call(base_url, "campaign_label", auth=users[0], label="noise", **first)
    assert "was used for another label" in reused.text
    bad = _call(base_url, "campaign_label", auth=users[0], label="maybe",
                **dict(first, label_id=f"l-{uuid.uuid4()}"))
    assert "label must be one of yes, no, noise, skip" in bad.text


def test_next_iteration_publishes_the_campaign_models_scores(
        base_url, users, campaign_id, tap, psql):
    _create(base_url, users[0], campaign_id)
    batch = _batch(tap, campaign_id, 1)
    teff = {str(r["obs_id"]): float(r["teff"]) for r in tap.search(
        "SELECT obs_id, teff FROM retrspect.spectra WHERE obs_id IN ("
        + ",".join(f"'{b}'" for b in batch) + ")").to_table()}
    for obs_id in batch:            # a rule for "sun-like": 5300-6300 K
        label = "yes" if 5300 < teff.get(obs_id, 0) < 6300 else "no"
        _rows(_call(base_url, "campaign_label", auth=users[0], campaign_id=campaign_id,
                    obs_id=obs_id, label=label, label_id=f"l-{uuid.uuid4()}"))
    advanced = _rows(_call(base_url, "campaign_next", auth=users[0],
                           campaign_id=campaign_id, from_iteration="1"))[0]
    assert advanced["iteration"] == 2 and advanced["model_version"]
    again = _rows(_call(base_url, "campaign_next", auth=users[0],
                        campaign_id=campaign_id, from_iteration="1"))[0]
    assert again["iteration"] == 2                    # a re-sent request: once
    # the published scores are the model fitted on these labels
    latents = tap.search("SELECT obs_id, latent FROM retrspect.ml_results "
                         "WHERE latent IS NOT NULL", maxrec=100_000).to_table()
    ids = [str(v) for v in latents["obs_id"]]
    x = np.array([np.asarray(v, np.float64) for v in latents["latent"]])
    labels = tap.search(f"SELECT obs_id, label FROM retrspect.labels WHERE campaign_id = "
                        f"'{campaign_id}'").to_table()
    truth = {str(o): str(l) == "yes" for o, l in zip(labels["obs_id"], labels["label"])}
    order = sorted(ids)
    index = {o: n for n, o in enumerate(ids)}
    rows = [index[o] for o in order if o in truth]
    model = fit(x[rows], np.array([truth[ids[r]] for r in rows]))
    assert model.version == advanced["model_version"]
    published = tap.search(
        "SELECT obs_id, score FROM retrspect.campaign_scores WHERE campaign_id = "
        f"'{campaign_id}' AND model_version = '{model.version}'", maxrec=100_000).to_table()
    assert len(published) == len(ids)
    got = {str(o): float(s) for o, s in zip(published["obs_id"], published["score"])}
    np.testing.assert_allclose([got[o] for o in ids], model(x), rtol=1e-5, atol=1e-6)
    # the next batch is new, and progress counts the confirmed members
    assert not set(_batch(tap, campaign_id, 2)) & (set(batch) | set(SEEDS))
    progress = _rows(_call(base_url, "campaign_progress", campaign_id=campaign_id))
    assert [p["iteration"] for p in progress] == [0, 1, 2]
    assert progress[1]["labelled"] == 12 and progress[0]["confirmed"] == 2


def test_two_labellers_at_once_lose_nothing(base_url, users, campaign_id, psql):
    _create(base_url, users[0], campaign_id)
    batch = psql("SELECT string_agg(obs_id, ',' ORDER BY batch_position) FROM "
                 f"retrspect.campaign_batches WHERE campaign_id = '{campaign_id}' "
                 "AND iteration = 1").split(",")
    sent, errors = [], []

    def labeller(user):
        session = requests.Session()
        for obs_id in batch:
            for label in ("yes", "no"):
                label_id = f"l-{uuid.uuid4()}"
                response = session.post(
                    f"{base_url}/retrspect/q/campaign_label/api", auth=user, timeout=120,
                    data={"campaign_id": campaign_id, "obs_id": obs_id, "label": label,
                          "label_id": label_id})
                (sent if response.ok and "ERROR" not in response.text else errors).append(
                    label_id)

    threads = [threading.Thread(target=labeller, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = psql(f"SELECT string_agg(label_id, ',') FROM retrspect.labels WHERE "
                  f"campaign_id = '{campaign_id}' AND iteration = 1").split(",")
    assert sorted(stored) == sorted(sent) and len(sent) == 2 * 2 * len(batch)


def test_a_server_process_killed_mid_labelling_loses_no_confirmed_label(
        base_url, users, campaign_id, psql):
    _create(base_url, users[0], campaign_id)
    batch = psql("SELECT string_agg(obs_id, ',' ORDER BY batch_position) FROM "
                 f"retrspect.campaign_batches WHERE campaign_id = '{campaign_id}' "
                 "AND iteration = 1").split(",")
    confirmed, errors = [], []

    def labeller(n, stop):
        user, count = users[n], 0
        while not stop.is_set():
            label_id = f"l-{uuid.uuid4()}"
            try:
                response = requests.post(
                    f"{base_url}/retrspect/q/campaign_label/api", auth=user, timeout=120,
                    data={"campaign_id": campaign_id, "obs_id": batch[count % len(batch)],
                          "label": ("yes", "no")[count % 2], "label_id": label_id})
                if response.ok and "ERROR" not in response.text:
                    confirmed.append(label_id)
                else:
                    errors.append(response.text[:200])
            except requests.RequestException as err:
                errors.append(repr(err))
            count += 1

    run_clients_through_a_kill(labeller, len(users), after_s=3)
    assert errors == []
    stored = set(psql(f"SELECT string_agg(label_id, ',') FROM retrspect.labels "
                      f"WHERE campaign_id = '{campaign_id}'").split(","))
    assert len(confirmed) > 20 and set(confirmed) <= stored


# ------------------------------------------------------------- the page --

def _wait(browser, condition, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(browser, timeout).until(lambda b: condition(b))


def test_a_campaign_in_the_browser_to_its_third_iteration(
        base_url, browser, users, campaign_id, psql, samp_receiver):
    """Log in, create, label by key (with back), retrain twice, and send the
    candidates to TOPCAT."""
    from selenium.webdriver.common.action_chains import ActionChains
    got, events, _ = samp_receiver
    user, password = users[0]
    browser.get(f"{base_url}/retrspect/q/explorer/static/campaign.html")
    _wait(browser, lambda b: b.execute_script(
        "return document.querySelectorAll('#new-spaces input').length") >= 3)
    browser.find_element("id", "user-input").send_keys(user)
    browser.find_element("id", "password-input").send_keys(password)
    browser.find_element("css selector", "#login button").click()
    browser.find_element("css selector", "#new-campaign summary").click()
    browser.find_element("id", "new-id").send_keys(campaign_id)
    browser.find_element("id", "new-target").send_keys("sun-like stars")
    browser.find_element("id", "new-seeds").send_keys(", ".join(SEEDS))
    batch_size = browser.find_element("id", "new-batch")
    batch_size.clear()
    batch_size.send_keys("6")
    browser.find_element("css selector", "#create button[type=submit]").click()
    _wait(browser, lambda b: "iteration 1" in b.find_element("id", "campaign-title").text)

    def shown():
        return browser.find_element("id", "item-name").text.split(" ·")[0]

    def latest(obs_id):
        return psql("SELECT label FROM retrspect.labels WHERE campaign_id = "
                    f"'{campaign_id}' AND obs_id = '{obs_id}' AND labeller = '{user}' "
                    "ORDER BY labelled_at DESC LIMIT 1")

    body = browser.find_element("tag name", "body")
    first = shown()
    ActionChains(browser).move_to_element(body).send_keys("y").perform()
    _wait(browser, lambda b: shown() != first)
    assert latest(first) == "yes"
    ActionChains(browser).send_keys("b").perform()
    _wait(browser, lambda b: shown() == first)
    ActionChains(browser).send_keys("n").perform()
    _wait(browser, lambda b: shown() != first)
    assert latest(first) == "no"
    assert psql(f"SELECT count(*) FROM retrspect.labels WHERE campaign_id = '{campaign_id}' "
                f"AND obs_id = '{first}'") == "2"                 # the yes is kept
    # a second person labels the same batch by direct requests meanwhile
    batch = psql("SELECT string_agg(obs_id, ',' ORDER BY batch_position) FROM "
                 f"retrspect.campaign_batches WHERE campaign_id = '{campaign_id}' "
                 "AND iteration = 1").split(",")
    theirs = []

    def second_person():
        for n, obs_id in enumerate(batch * 3):
            label_id = f"l-{uuid.uuid4()}"
            _rows(_call(base_url, "campaign_label", auth=users[1], campaign_id=campaign_id,
                        obs_id=obs_id, label=("no", "yes")[n % 2], label_id=label_id))
            theirs.append(label_id)

    other = threading.Thread(target=second_person)
    other.start()
    versions = []
    for iteration in (1, 2):
        for key in "ynynyn":
            before = browser.execute_script("return window.retrspectCampaign.written.length")
            ActionChains(browser).send_keys(key).perform()
            _wait(browser, lambda b: b.execute_script(
                "return window.retrspectCampaign.written.length") == before + 1)
        if iteration == 1:
            other.join()
            stored = set(psql(f"SELECT string_agg(label_id, ',') FROM retrspect.labels "
                              f"WHERE campaign_id = '{campaign_id}'").split(","))
            mine = browser.execute_script("return window.retrspectCampaign.written")
            assert len(theirs) == 18 and len(mine) == 8
            assert set(theirs) | set(mine) <= stored      # nothing lost
        browser.find_element("id", "next-iteration").click()
        _wait(browser, lambda b: f"iteration {iteration + 1}" in b.find_element(
            "id", "campaign-title").text)
        versions.append(psql(f"SELECT model_version FROM retrspect.campaigns WHERE "
                             f"campaign_id = '{campaign_id}'"))
    assert versions[0] != versions[1]              # new labels, a new model
    scores = [psql(f"SELECT string_agg(round(score::numeric, 6)::text, ',' ORDER BY obs_id) "
                   f"FROM retrspect.campaign_scores WHERE campaign_id = '{campaign_id}' "
                   f"AND model_version = '{v}'") for v in versions]
    assert scores[0] != scores[1]
    # the labels, as the page offers them for download
    csv = requests.get(browser.find_element("id", "labels-csv").get_attribute("href"),
                       timeout=60).text.splitlines()
    assert csv[0].startswith("label_id,") and len(csv) - 1 == int(psql(
        f"SELECT count(*) FROM retrspect.labels WHERE campaign_id = '{campaign_id}'"))
    votable = requests.get(browser.find_element("id", "labels-votable").get_attribute("href"),
                           timeout=60)
    assert b"<VOTABLE" in votable.content and campaign_id.encode() in votable.content
    version = psql(f"SELECT model_version FROM retrspect.campaigns WHERE campaign_id = "
                   f"'{campaign_id}'")
    assert psql(f"SELECT count(*) FROM retrspect.campaign_scores WHERE campaign_id = "
                f"'{campaign_id}' AND model_version = '{version}'") != "0"
    rows = browser.execute_script(
        "return document.querySelectorAll('#progress tbody tr').length")
    assert rows == 4                                   # iterations 0 to 3
    browser.find_element("id", "candidates-topcat").click()
    assert events["table.load.votable"].wait(20), browser.find_element("id", "status").text
    table = got["table.load.votable"]
    assert version in table["name"]
    from astropy.io.votable import parse_single_table
    import io
    sent = parse_single_table(io.BytesIO(requests.get(table["url"], timeout=60).content)
                              ).to_table()
    scores = list(sent["score"])
    assert len(scores) == 200 and scores == sorted(scores, reverse=True)
