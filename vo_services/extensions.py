"""What retrspect adds to DaCHS in every process (see :mod:`dachs_hook`).

For now this is the registration point only; the pgvector column type and
the nearest-spectrum ADQL functions attach here.
"""
from __future__ import annotations

#: ADQL user functions registered by this module (names as in ADQL)
REGISTERED_FUNCTIONS: list[str] = []


def register_adql_functions() -> None:
    """Register retrspect's ADQL user functions with DaCHS (none yet)."""
    # imported here: DaCHS is only importable inside the DaCHS venv
    from gavo.adql import ufunctions  # noqa: F401
