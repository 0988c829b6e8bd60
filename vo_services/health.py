"""``retrspect check``: is this installation whole and serving what it should?

An operator's first question after a deploy, an upgrade or a reboot.  Each
check asks the real component (PostgreSQL, the tables, the models, the
running server over HTTP) and says OK or FAIL with the reason, so a broken
install names what is broken instead of failing later in a user's query.
"""
from __future__ import annotations

import io
import json
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable

from retrspect.ingest.errors import ModelError, RetrspectError
from retrspect.vo_services import server
from retrspect.vo_services.grammars import table_exists, unembedded_spectra

#: the ADQL function a kNN query by spectrum id uses (from the import hook)
KNN_FUNCTION = "gavo_spectrum_distance"
#: database settings set-up makes for filtered kNN and cancelled queries
DB_SETTINGS = {"hnsw.iterative_scan": "strict_order",
               "client_connection_check_interval": "1s"}


@dataclass
class Result:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'}  {self.name:<12} {self.detail}"


class CheckFailed(RetrspectError):
    """A check's reason for failing (its message is shown)."""


def _one_row(sql: str, params: dict | None = None):
    from gavo import base
    with base.getTableConn() as conn:
        rows = list(conn.query(sql, params or {}))
    return rows[0] if rows else None


def _one_value(sql: str, params: dict | None = None):
    row = _one_row(sql, params)
    return row[0] if row else None


def check_database() -> str:
    from gavo import base
    with base.getTableConn() as conn:
        version = list(conn.query("SHOW server_version"))[0][0]
        extensions = dict(conn.query(
            "SELECT extname, extversion FROM pg_extension"))
        database = list(conn.query("SELECT current_database()"))[0][0]
        settings = dict(conn.query(
            "SELECT split_part(s, '=', 1), split_part(s, '=', 2) FROM "
            "pg_db_role_setting AS r JOIN pg_database AS d "
            "ON d.oid = r.setdatabase, unnest(r.setconfig) AS s "
            "WHERE d.datname = current_database() AND r.setrole = 0"))
    if int(version.split(".")[0]) < 15:
        raise CheckFailed(f"PostgreSQL {version}; retrspect needs 15")
    missing = [name for name in ("pg_sphere", "vector") if name not in extensions]
    if missing:
        raise CheckFailed(f"extension(s) {', '.join(missing)} not installed "
                          f"in database {database}")
    wrong = [f"{key} is {settings.get(key)!r}, not {value!r}"
             for key, value in DB_SETTINGS.items() if settings.get(key) != value]
    if wrong:
        raise CheckFailed("; ".join(wrong) + " (scripts/setup_system.sh sets them)")
    return (f"PostgreSQL {version}, pg_sphere {extensions['pg_sphere']}, "
            f"pgvector {extensions['vector']}")


def check_tables() -> str:
    for name in ("retrspect.raw_data", "retrspect.ml_results",
                 "retrspect.spectra"):
        if not table_exists(name):
            raise CheckFailed(f"{name} does not exist; run 'retrspect deploy'")
    spectra = _one_value("SELECT count(*) FROM retrspect.raw_data")
    if not spectra:
        raise CheckFailed("retrspect.raw_data is empty")
    from retrspect.vo_services.similarity import space_columns
    indexes = []
    for name, column in sorted(space_columns().items()):
        schema, table = column.store.split(".")
        index = _one_value(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %(schema)s "
            "AND tablename = %(table)s AND indexdef ILIKE %(hnsw)s",
            {"schema": schema, "table": table, "hnsw": "%USING hnsw%"})
        if index is None:
            raise CheckFailed(f"{column.store} (space {name}) has no HNSW "
                              "index on latent")
        indexes.append(index)
    return f"{spectra} spectra; HNSW indexes {', '.join(indexes)}"


def check_models() -> str:
    from retrspect.ingest.infer import choose_providers, model_dir_from_environment
    from retrspect.ingest.pipeline import IngestOptions
    from retrspect.vo_services.similarity import table_models
    if not IngestOptions.from_environment().use_models:
        return "models switched off (RETRSPECT_NO_MODELS)"
    try:
        models = table_models()
    except ModelError as error:  # names the file and the problem
        raise CheckFailed(str(error)) from None
    missing = {"vae", "classifier", "velocity"} - set(models.models)
    if missing:
        raise CheckFailed(f"no {', '.join(sorted(missing))} model in "
                          f"{model_dir_from_environment()}")
    ids = {kind: model.model_id for kind, model in models.builtin.items()}
    behind = _one_value("SELECT count(*) " + unembedded_spectra(
        "retrspect.raw_data", "retrspect.ml_results", ids))
    if behind:
        raise CheckFailed(f"{behind} spectra have no results of the current "
                          "models; run 'retrspect import'")
    unknown = _one_value("SELECT count(*) FROM retrspect.ml_results "
                         "WHERE ml_class IS NULL AND class_uncertainty IS NOT NULL")
    _, providers = choose_providers()
    return (f"{', '.join(m.model_id for _, m in sorted(models.models.items()))}; "
            f"{check_spaces()}; {unknown} classed unknown (outside the models' "
            f"domain); {providers}")


def check_spaces() -> str:
    """Per latent space: spectra embedded, and spectra its model saw that
    cover too little of its grid; every spectrum must have been seen by
    the space's current model."""
    from retrspect.vo_services.similarity import model_of, space_columns
    parts = []
    for name, column in sorted(space_columns().items(),
                               key=lambda item: (item[0] != "generic", item[0])):
        model = model_of(name)
        seen_by_model = ("TRUE" if name == "generic" else
                         "v.model = %(model)s")
        behind = _one_value(
            f"SELECT count(*) FROM retrspect.raw_data AS r WHERE NOT EXISTS "
            f"(SELECT 1 FROM {column.store} AS v WHERE v.pubdid = r.ssa_pubdid "
            f"AND {seen_by_model})", {"model": model.model_id})
        if behind:
            raise CheckFailed(f"space {name}: {behind} spectra not seen by "
                              f"{model.model_id}; run 'retrspect import'")
        embedded, uncovered = _one_row(
            f"SELECT count(latent), count(*) - count(latent) FROM {column.store}")
        parts.append(f"{name}: {embedded} embedded, {uncovered} cover less "
                     f"than {model.min_coverage:.0%} of its grid")
    return "; ".join(parts)


def _get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def check_server() -> str:
    if not server.is_running():
        raise CheckFailed(f"nothing answers on {server.base_url()}; run "
                          "'retrspect serve start'")
    if not server.serves_installed_code():
        raise CheckFailed("the server runs older code or models than are "
                          "installed; run 'retrspect deploy'")
    answering = server.backends_answering()
    silent = [port for port, ok in answering.items() if not ok]
    if silent:
        raise CheckFailed(f"DaCHS processes on ports {silent} do not answer "
                          f"({server.describe_processes()})")
    # every process, not only the one the balancer picked, must know the
    # ADQL functions: ask each directly
    for port in answering:
        caps = _get(f"http://127.0.0.1:{port}/tap/capabilities").decode().lower()
        if KNN_FUNCTION not in caps:
            raise CheckFailed(f"{KNN_FUNCTION} is not in /tap/capabilities of the "
                              f"process on port {port}: the import hook did not load")
    return (f"serving on {server.base_url()}, code and models current: "
            f"{server.describe_processes()}")


def check_knn_query() -> str:
    """One nearest-spectrum query through TAP, as TOPCAT would send it."""
    from astropy.io.votable import parse_single_table
    # a spectrum on the models' grid (the two off it share one latent)
    obs_id = _one_value("SELECT obs_id FROM retrspect.ml_results WHERE "
                        "redshift IS NOT NULL ORDER BY obs_id LIMIT 1")
    literal = "'" + obs_id.replace("'", "''") + "'"
    query = ("SELECT TOP 3 m.obs_id, "
             f"{KNN_FUNCTION}(m.latent, {literal}) AS d "
             f"FROM retrspect.ml_results AS m ORDER BY d")
    url = f"{server.base_url()}/tap/sync?" + urllib.parse.urlencode(
        {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query})
    table = parse_single_table(io.BytesIO(_get(url))).to_table()
    if len(table) != 3 or table["obs_id"][0] != obs_id or table["d"][0] != 0:
        raise CheckFailed(f"a kNN query on {obs_id} returned {len(table)} "
                          "rows, not 3 starting with itself")
    return f"TAP kNN on {obs_id}: 3 rows, itself first"


def check_replica() -> str:
    from retrspect.vo_services import replica
    return replica.describe()


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("database", check_database),
    ("tables", check_tables),
    ("models", check_models),
    ("server", check_server),
    ("replica", check_replica),
    ("knn", check_knn_query),
]


def run_checks() -> list[Result]:
    """Every check in order; an exception is a FAIL with its message."""
    results = []
    for name, check in CHECKS:
        try:
            results.append(Result(name, True, check()))
        except CheckFailed as reason:
            results.append(Result(name, False, str(reason)))
        except Exception as error:  # an unexpected failure is still a FAIL
            results.append(Result(name, False,
                                  f"{type(error).__name__}: {error}"))
    return results


def main(as_json: bool = False) -> int:
    results = run_checks()
    if as_json:
        print(json.dumps([r.__dict__ for r in results], indent=1))
    else:
        print("\n".join(r.line() for r in results))
    return 0 if all(r.ok for r in results) else 1
