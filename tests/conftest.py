"""Shared fixtures: the running DaCHS stack and clients for it.

The stack is started by the README's commands (``make test`` runs set-up and
deploy first).  A test that needs it and finds it down fails: a skipped
integration test proves nothing.
"""
from __future__ import annotations

import pytest

from retrspect.vo_services import server


@pytest.fixture(scope="session")
def base_url() -> str:
    url = server.base_url()
    if not server.is_running():
        pytest.fail(f"DaCHS is not serving on {url}: run `make run` first")
    return url


@pytest.fixture(scope="session")
def tap(base_url):
    import pyvo
    return pyvo.dal.TAPService(f"{base_url}/tap")


@pytest.fixture(scope="session")
def ssa(base_url):
    import pyvo
    return pyvo.dal.SSAService(f"{base_url}/retrspect/q/ssa/ssap.xml")


@pytest.fixture
def db():
    """A read-only connection to DaCHS's database (DaCHS's own profile).

    One per test: the fault tests restart PostgreSQL, which ends every
    connection opened before.
    """
    from gavo import base
    conn = base.getDBConnection("trustedquery")
    yield conn
    conn.close()


def sql(db, query: str, params: dict | None = None) -> list[tuple]:
    """Rows of a query (psycopg2 parameters, never string formatting)."""
    with db.cursor() as cursor:
        cursor.execute(query, params or {})
        rows = cursor.fetchall()
    db.rollback()
    return rows


def psql(query: str) -> str:
    """Output of one SQL statement run by psql as the postgres superuser
    (for what the DaCHS roles may not see or do: other sessions, DDL)."""
    import subprocess
    return subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-d",
                           "gavo", "-tA", "-c", query], capture_output=True,
                          text=True, check=True).stdout.strip()


SCRATCH_ROWS = 100_000


@pytest.fixture(scope="session")
def scratch_latents():
    """100k-row copies of the ML and spectra tables for query-plan tests.

    PostgreSQL prefers a sequential scan on tables as small as the demo's,
    so index use is checked on tables of a realistic size.  They live in
    their own schema, are made once and kept (a second run reuses them).
    """
    from gavo import base
    from retrspect.vo_services.similarity import latent_column
    ops = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops"}[
        latent_column().metric]
    conn = base.getDBConnection("admin")
    with conn.cursor() as cursor:
        cursor.execute("SELECT to_regclass('retrspect_scratch.ml_big') "
                       "IS NOT NULL")
        exists = cursor.fetchone()[0]
        if exists:
            cursor.execute("SELECT COUNT(*) FROM retrspect_scratch.ml_big")
            exists = cursor.fetchone()[0] == SCRATCH_ROWS
        if exists:  # the index must serve the metric the model is for
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname "
                           "= 'ml_big_latent_hnsw'")
            found = cursor.fetchone()
            exists = bool(found) and ops in found[0]
        if not exists:
            cursor.execute("""
                DROP SCHEMA IF EXISTS retrspect_scratch CASCADE;
                CREATE SCHEMA retrspect_scratch;
                CREATE TABLE retrspect_scratch.ml_big AS
                SELECT 'ivo://scratch/' || g AS pubdid, 'o' || g AS obs_id,
                  (SELECT '[' || string_agg(
                     (random() - 0.5)::real::text, ',') || ']'
                   FROM generate_series(1, 32) WHERE g > 0)::vector(32)
                   AS latent,
                  CASE WHEN g %% 1000 = 0 THEN 'qso'
                       ELSE (ARRAY['O','B','A','F','G','K','M'])[1 + g %% 7]
                  END AS ml_class,
                  (random() * 100)::real AS snr
                FROM generate_series(1, %(n)s) AS g;
                ALTER TABLE retrspect_scratch.ml_big ADD PRIMARY KEY (pubdid);
                CREATE INDEX ml_big_ml_class ON retrspect_scratch.ml_big (ml_class);
                CREATE INDEX ml_big_latent_hnsw ON retrspect_scratch.ml_big
                  USING hnsw (latent """ + ops + """);
                CREATE TABLE retrspect_scratch.spectra_big AS
                SELECT pubdid AS ssa_pubdid, 'star ' || obs_id AS ssa_targname
                FROM retrspect_scratch.ml_big;
                ALTER TABLE retrspect_scratch.spectra_big
                  ADD PRIMARY KEY (ssa_pubdid);
                ANALYZE retrspect_scratch.ml_big;
                ANALYZE retrspect_scratch.spectra_big;
            """, {"n": SCRATCH_ROWS})
            conn.commit()
    yield {"conn": conn,
           "tables": {"retrspect.ml_results": "retrspect_scratch.ml_big",
                      "retrspect.spectra": "retrspect_scratch.spectra_big"}}
    conn.close()
