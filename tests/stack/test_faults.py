"""Faults during ingest and service, on the real stack.

Ingest faults run against the bench_tools schema (retrspect_bench, made from the
demo's own RD) so the demo's tables are never at risk: the import is killed
with SIGKILL at random points, PostgreSQL is restarted under it, and its
tables are put on a tablespace on a 1 MB tmpfs so the disk fills.  After
each, the tables hold nothing of the interrupted import (the state before
it), and a re-run lands every spectrum exactly once.

Service faults: PostgreSQL restarted while TAP queries run (the server
recovers on its own), and a query over its time limit is cancelled in the
database, not left running.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

N_FILES = 1200
TMPFS = Path("/var/lib/postgresql/retrspect_full")


def _counts(psql) -> tuple[int, int, int]:
    """(raw rows, distinct obs_ids, ML rows) in the bench_tools tables."""
    if psql("SELECT to_regclass('retrspect_bench.raw_data')") == "":
        return 0, 0, 0
    raw, distinct = psql("SELECT COUNT(*), COUNT(DISTINCT obs_id) FROM "
                          "retrspect_bench.raw_data").split("|")
    ml = psql("SELECT COUNT(*) FROM retrspect_bench.ml_results")
    return int(raw), int(distinct), int(ml)


def _start_import(bench_tools, extra_env: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, PATH=f"{bench_tools.VENV_BIN}:{os.environ['PATH']}",
               **(extra_env or {}))
    return subprocess.Popen(
        ["runuser", "-u", "dachsroot", "--", str(bench_tools.VENV_BIN / "dachs"),
         "imp", bench_tools.BENCH_RD], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        encoding="utf-8", errors="replace", start_new_session=True)


def _wait_for_postgres(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["pg_isready", "-q"]).returncode == 0:
            return
        time.sleep(0.5)
    raise RuntimeError("PostgreSQL did not come back")


@pytest.fixture(scope="module")
def bench_files(bench_tools):
    root = bench_tools.make_files(N_FILES)
    bench_tools.write_bench_rd(root)
    yield root
    bench_tools.dachs("drop", bench_tools.BENCH_RD, check=False)


@pytest.fixture
def empty_bench(bench_files, bench_tools, psql):
    bench_tools.dachs("drop", bench_tools.BENCH_RD, check=False)
    bench_tools.dachs("imp", bench_tools.BENCH_RD, "make_view", check=False)
    assert _counts(psql) == (0, 0, 0) or _counts(psql)[0] == 0
    return bench_files


def _complete_rerun(bench_tools, psql) -> None:
    result = bench_tools.dachs("imp", bench_tools.BENCH_RD)
    raw, distinct, ml = _counts(psql)
    assert raw == distinct == N_FILES, result.stdout[-2000:]
    # ML rows exactly where a VAE is installed (none without shipped models)
    assert ml in (0, N_FILES)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_mid_import_leaves_tables_as_before(empty_bench, seed, bench_tools,
                                                     psql):
    delay = random.Random(seed).uniform(1.0, 4.0)
    process = _start_import(bench_tools)
    time.sleep(delay)
    finished = process.poll() is not None
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    raw, distinct, ml = _counts(psql)
    if finished:   # the import won the race: it must be complete
        assert raw == distinct == N_FILES
    else:          # killed: nothing of it is visible
        assert (raw, ml) == (0, 0), f"killed after {delay:.1f} s"
    _complete_rerun(bench_tools, psql)


def test_database_restart_mid_import(empty_bench, bench_tools, psql):
    process = _start_import(bench_tools)
    time.sleep(2.0)
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main",
                    "restart", "-m", "fast"], check=True)
    _wait_for_postgres()
    output, _ = process.communicate(timeout=300)
    raw, distinct, ml = _counts(psql)
    assert raw in (0, N_FILES) and raw == distinct, output[-2000:]
    _complete_rerun(bench_tools, psql)


@pytest.fixture
def full_tablespace(bench_tools, psql):
    """A 1 MB tablespace on tmpfs.

    The read replica runs on this host and replays CREATE TABLESPACE at the
    same path, where it would write into (and on replay wipe) the primary's
    files: its replay is paused while the tablespace exists, and resumed
    once it is dropped and unmounted, when the replica makes and drops it
    in the empty directory below (owned by postgres).  (psql, not DaCHS:
    a DaCHS connection pool in this process would die with the PostgreSQL
    restarts of the tests below.)"""
    TMPFS.mkdir(exist_ok=True)
    subprocess.run(["chown", "postgres:postgres", str(TMPFS)], check=True)
    psql("SELECT pg_wal_replay_pause()", port=5433)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                    str(TMPFS)], check=True)
    try:
        subprocess.run(["chown", "postgres:postgres", str(TMPFS)], check=True)
        psql(f"CREATE TABLESPACE retrspect_full LOCATION '{TMPFS}'")
        psql("GRANT CREATE ON TABLESPACE retrspect_full TO PUBLIC")
        yield "retrspect_full"
    finally:
        bench_tools.dachs("drop", bench_tools.BENCH_RD, check=False)
        psql("DROP TABLESPACE IF EXISTS retrspect_full")
        subprocess.run(["umount", str(TMPFS)], check=False)
        psql("SELECT pg_wal_replay_resume()", port=5433)
        target = psql("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + 120
        while psql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'", port=5433) != "t":
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.2)


def test_disk_full_mid_import(bench_files, full_tablespace, bench_tools, psql):
    bench_tools.dachs("drop", bench_tools.BENCH_RD, check=False)
    process = _start_import(
        bench_tools, {"PGOPTIONS": f"-c default_tablespace={full_tablespace}"})
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "No space left on device" in output or "could not extend" in output
    raw, _, ml = _counts(psql)
    assert (raw, ml) == (0, 0)
    bench_tools.dachs("drop", bench_tools.BENCH_RD, check=False)
    _complete_rerun(bench_tools, psql)


# ------------------------------------------------------------- service ----

def test_server_recovers_after_postgres_restart(tap):
    query = "SELECT COUNT(*) AS n FROM retrspect.spectra"
    before = int(tap.search(query)["n"][0])
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main",
                    "restart", "-m", "fast"], check=True)
    _wait_for_postgres()
    answers, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            answers.append(int(tap.search(query)["n"][0]))
        except Exception as err:  # the first may hit a dead pooled connection
            answers.append(repr(err))
        if answers[-1] == before and answers[-2:] == [before] * 2:
            break
        time.sleep(0.5)
    assert answers[-2:] == [before, before], answers


def test_timed_out_query_is_cancelled_in_the_database(tap, psql):
    """An async job over its EXECUTIONDURATION is stopped, and its SQL no
    longer runs in PostgreSQL."""
    slow = ("SELECT COUNT(*) FROM retrspect.ml_results AS a, "
            "retrspect.ml_results AS b, retrspect.ml_results AS c "
            "WHERE gavo_latent_distance(a.latent, b.latent) "
            "< gavo_latent_distance(b.latent, c.latent)")
    def untrusted_backends() -> int:
        # the job's SQL shows as FETCH from a cursor: count the role's work
        # on the read replica, where TAP queries run
        return int(psql("SELECT COUNT(*) FROM pg_stat_activity WHERE "
                         "usename = 'untrusted' AND state = 'active'", port=5433))

    assert untrusted_backends() == 0
    job = tap.submit_job(slow)
    job.execution_duration = 3
    job.run()
    deadline = time.monotonic() + 30
    while untrusted_backends() == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert untrusted_backends() == 1  # the query runs in the database
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=60)
    assert job.phase in ("ERROR", "ABORTED")
    deadline = time.monotonic() + 10
    while untrusted_backends() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert untrusted_backends() == 0
    job.delete()
