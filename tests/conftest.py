"""Shared fixtures: the running DaCHS stack and clients for it.

The stack is started by the README's commands (``make test`` runs set-up and
deploy first).  A test that needs it and finds it down fails: a skipped
integration test proves nothing.
"""
from __future__ import annotations

import pytest

from vo_services import server


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


@pytest.fixture(scope="session")
def db():
    """A read-only connection to DaCHS's database (DaCHS's own profile)."""
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
