"""Tests against the running stack (DaCHS, PostgreSQL with pg_sphere and
pgvector, the real clients): every test in this folder is marked ``stack``,
so ``pytest -m "not stack"`` runs what needs no server."""
from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.stack)

