"""The read replica: TAP queries run on a PostgreSQL streaming standby.

Set-up (``scripts/setup_system.sh``) builds the standby with
``pg_basebackup`` (cluster ``15/replica``, port 5433) and points DaCHS's
``untrustedquery`` profile at it, which is the profile TAP queries, sync and
async, run under.  What must write stays on the primary, because a hot
standby refuses writes: the rest of DaCHS (UWS bookkeeping, imports, the
services) uses the trusted profiles, and a TAP query with uploads, which
DaCHS loads into tables of the query's own connection, is sent to
``untrustedprimary`` (:func:`route_uploads_to_primary`, loaded into every
DaCHS process by :mod:`retrspect.vo_services.dachs_hook`).

An import is visible on the replica once the standby has replayed it:
:func:`wait_caught_up` waits for that, so a query right after ``retrspect
import`` sees the new rows.
"""
from __future__ import annotations

import time
from pathlib import Path

from retrspect.ingest.errors import RetrspectError

#: DaCHS's profile for TAP queries (set-up points it at the replica)
QUERY_PROFILE = "untrustedquery"
#: the same role on the primary, for queries that must write (uploads)
PRIMARY_PROFILE = "untrustedprimary"


class ReplicaError(RetrspectError, RuntimeError):
    """The replica is missing, not in recovery, or does not catch up."""


def _profile_path(name: str) -> Path:
    from gavo import base
    return Path(base.getConfig("configDir")) / name


def configured() -> bool:
    """Whether TAP queries go to a replica (set-up wrote the profiles)."""
    try:
        text = _profile_path(QUERY_PROFILE).read_text()
    except OSError:
        return False
    return "include dsn-replica" in text.split("\n") and \
        _profile_path(PRIMARY_PROFILE).exists()


def _query_one(profile: str | None, sql: str, params: dict | None = None):
    from gavo import base
    if profile is None:
        with base.getTableConn() as conn:
            return list(conn.query(sql, params or {}))[0]
    conn = base.getDBConnection(profile)
    try:
        cursor = conn.cursor()
        cursor.execute(sql, params or {})
        return cursor.fetchone()
    finally:
        conn.close()


def bytes_behind() -> int:
    """WAL bytes the replica has yet to replay of what the primary wrote."""
    (primary_lsn,) = _query_one(None, "SELECT pg_current_wal_lsn()::text")
    in_recovery, behind = _query_one(
        QUERY_PROFILE, "SELECT pg_is_in_recovery(), "
        "pg_wal_lsn_diff(%(lsn)s::pg_lsn, pg_last_wal_replay_lsn())::bigint",
        {"lsn": primary_lsn})
    if not in_recovery:
        raise ReplicaError("the untrustedquery profile's server is not a standby "
                           "(pg_is_in_recovery() is false)")
    return max(0, int(behind or 0))


def wait_caught_up(timeout: float = 120.0) -> float:
    """Wait until the replica has replayed everything the primary had
    written when called; returns the seconds waited (0 without a replica)."""
    if not configured():
        return 0.0
    started = time.monotonic()
    (target,) = _query_one(None, "SELECT pg_current_wal_lsn()::text")
    while True:
        (done,) = _query_one(
            QUERY_PROFILE,
            "SELECT pg_last_wal_replay_lsn() >= %(lsn)s::pg_lsn", {"lsn": target})
        if done:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise ReplicaError(f"the replica did not replay the primary's WAL up to "
                               f"{target} within {timeout:.0f} s")
        time.sleep(0.05)


def describe() -> str:
    """One line for ``retrspect check``."""
    if not configured():
        return "no replica: TAP queries run on the primary"
    from gavo import base
    conn = base.getDBConnection(QUERY_PROFILE)
    try:
        port = conn.get_dsn_parameters().get("port")
    finally:
        conn.close()
    return f"TAP queries on the streaming replica (port {port}), {bytes_behind()} bytes behind"


def route_uploads_to_primary() -> None:
    """Run a TAP query with uploads under the primary's untrusted profile:
    DaCHS creates the uploaded tables in the query's connection, which a
    standby refuses."""
    from gavo.protocols import taprunner
    original = taprunner.getQTableFromJob
    if getattr(original, "routes_uploads", False):
        return

    def getQTableFromJob(parameters, job, queryProfile, timeout):
        if parameters.get("upload") and queryProfile == QUERY_PROFILE and configured():
            queryProfile = PRIMARY_PROFILE
        return original(parameters, job, queryProfile, timeout)

    getQTableFromJob.routes_uploads = True
    taprunner.getQTableFromJob = getQTableFromJob
