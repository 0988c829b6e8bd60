"""Serving many users (issue 16): several DaCHS processes behind HAProxy,
kept up by supervisord, with TAP queries on a streaming replica.

The last test stops everything and starts it again; it runs last in this
file and leaves the stack serving.
"""
from __future__ import annotations

import gzip
import io
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from process_kill import run_clients_through_a_kill

from retrspect.vo_services import replica, server, serving

RETRSPECT = str(Path(sys.executable).parent / "retrspect")
SAMPLE = ["miles_m0028", "stelib_hd005820", "manga_test_spectra_0"]


def _ports():
    return [p.port for p in serving.processes() if p.port is not None]


def _knn(base, obs_id):
    response = requests.post(f"{base}/tap/sync", data={
        "LANG": "ADQL", "REQUEST": "doQuery",
        "QUERY": "SELECT TOP 10 obs_id, gavo_spectrum_distance(latent, "
                 f"'{obs_id}') AS d FROM retrspect.ml_results ORDER BY d"}, timeout=60)
    response.raise_for_status()
    return _rows(response.content)


def _rows(content):
    from astropy.io.votable import parse_single_table
    table = parse_single_table(io.BytesIO(content)).to_table()
    return [tuple(str(v) for v in row) for row in table]


def _getdata(base, obs_id):
    """The SDM spectrum's content: its PARAMs by name and its data bytes.

    Not the raw bytes: DaCHS names XML elements (``ID="ndmst..."``) from a
    per-process counter, so two processes (or one, twice) write the same
    spectrum with other IDs."""
    from astropy.io.votable import parse
    response = requests.get(f"{base}/retrspect/q/sdl/dlget", params={
        "ID": f"ivo://retrspect.example/~?retrspect/{obs_id}"}, timeout=60)
    response.raise_for_status()
    table = parse(io.BytesIO(response.content)).get_first_table()
    params = {p.name: str(p.value) for p in table.params}
    return params, table.array.data.tobytes(), table.array.mask.tobytes()


def _ssap(base, pos):
    response = requests.get(f"{base}/retrspect/q/ssa/ssap.xml", params={
        "REQUEST": "queryData", "POS": pos, "SIZE": "5"}, timeout=60)
    response.raise_for_status()
    return _rows(response.content)


def test_one_process_per_core_behind_the_balancer(base_url):
    ports = _ports()
    assert len(ports) == serving.process_count() == len(os.sched_getaffinity(0))
    assert all(server.backends_answering().values())
    names = {p.name for p in serving.processes() if p.running}
    assert names == {f"web{i}" for i in range(1, len(ports) + 1)} | {"balancer", "taprun"}


def test_every_process_serves_the_same_answers(base_url):
    """TAP kNN, SSAP and getData bytes: the same through the balancer and
    from each process directly."""
    direct = [f"http://127.0.0.1:{port}" for port in _ports()]
    assert len(direct) >= 2
    rng = random.Random(5)
    for obs_id in SAMPLE:
        want = _knn(base_url, obs_id)
        assert want[0][0] == obs_id
        assert all(_knn(d, obs_id) == want for d in direct)
        data = _getdata(base_url, obs_id)
        assert data[0]["ssa_pubDID"].endswith(obs_id) and len(data[1]) > 1000
        assert all(_getdata(d, obs_id) == data for d in direct)
        pos = f"{rng.uniform(0, 360):.3f},{rng.uniform(-60, 60):.3f}"
        rows = _ssap(base_url, pos)
        assert all(_ssap(d, pos) == rows for d in direct)


def test_responses_are_sent_whole_so_a_killed_process_can_be_retried(base_url):
    """TAP, SSAP and getData answers leave a DaCHS process only when they are
    complete (with a Content-Length, not chunked), so a process killed while
    writing one sends nothing and HAProxy re-sends the request."""
    obs_id = SAMPLE[0]
    requests_ = [
        ("POST", "/tap/sync", {"data": {
            "LANG": "ADQL", "REQUEST": "doQuery",
            "QUERY": "SELECT TOP 50 * FROM retrspect.ml_results"}}),
        ("GET", "/retrspect/q/ssa/ssap.xml", {"params": {
            "REQUEST": "queryData", "MAXREC": "50"}}),
        ("GET", "/retrspect/q/sdl/dlget", {"params": {
            "ID": f"ivo://retrspect.example/~?retrspect/{obs_id}"}})]
    for port in _ports():
        for encoding in ("identity", "gzip"):
            for method, path, kwargs in requests_:
                answer = requests.request(
                    method, f"http://127.0.0.1:{port}{path}", stream=True, timeout=60,
                    headers={"Accept-Encoding": encoding}, **kwargs)
                answer.raise_for_status()
                sent = answer.raw.read(decode_content=False)
                assert "chunked" not in answer.headers.get("Transfer-Encoding", "")
                assert answer.headers.get("Content-Encoding", "identity") == encoding
                assert int(answer.headers["Content-Length"]) == len(sent)
                body = gzip.decompress(sent) if encoding == "gzip" else sent
                assert len(_rows(body)) >= 50


def test_a_killed_process_comes_back_and_requests_in_flight_are_retried(base_url):
    """SIGKILL one DaCHS process while clients send GETs and POSTs: no
    client sees an error, and supervisord restarts the process."""
    errors, done, at_kill = [], [], []

    def client(seed, stop):
        rng = random.Random(seed)
        while not stop.is_set():
            obs_id = rng.choice(SAMPLE)
            try:
                if rng.random() < 0.5:
                    _knn(base_url, obs_id)                  # POST
                else:
                    _getdata(base_url, obs_id)              # GET
                done.append(1)
            except Exception as err:                        # counted, not hidden
                errors.append(f"{type(err).__name__}: {err}"[:300])

    # four clients: the sync jobs a killed process leaves EXECUTING stay
    # below maxTAPRunning until they are cleared
    victim = run_clients_through_a_kill(client, 4)
    before = 0
    assert errors == []
    assert len(done) > before + 20              # clients went on being served
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = {p.name: p for p in serving.processes()}[victim.name]
        if now.running and now.pid != victim.pid and \
                server.backends_answering()[victim.port]:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"{victim.name} did not come back: {server.describe_processes()}")


def test_sync_jobs_orphaned_by_a_killed_process_do_not_block_async_jobs(tap, psql):
    """Four sync jobs left EXECUTING (pid -1) past their time limit, as a
    killed server process leaves them, fill maxTAPRunning; an async job
    still runs, and the orphans end in ERROR."""
    ids = [f"orphan{uuid.uuid4().hex[:10]}" for _ in range(4)]
    values = ", ".join(
        f"('{i}', 'EXECUTING', 60, (now() AT TIME ZONE 'UTC') - interval '10 minutes', "
        f"(now() AT TIME ZONE 'UTC') + interval '1 day', -1)" for i in ids)
    psql(port=5432, query="INSERT INTO tap_schema.tapjobs (jobId, phase, executionDuration, "
                f"startTime, destructionTime, pid) VALUES {values}")
    try:
        job = tap.submit_job("SELECT TOP 3 obs_id FROM retrspect.raw_data ORDER BY obs_id")
        job.run()
        # at once, not at the next time something else touches the queue
        job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=15)
        job.raise_if_error()
        assert len(job.fetch_result().to_table()) == 3
        job.delete()
        phases = psql(port=5432, query="SELECT DISTINCT phase FROM tap_schema.tapjobs WHERE jobId IN ("
                             + ", ".join(f"'{i}'" for i in ids) + ")")
        assert phases == "ERROR"
    finally:
        psql(port=5432, query="DELETE FROM tap_schema.tapjobs WHERE jobId IN ("
                    + ", ".join(f"'{i}'" for i in ids) + ")")


TAPRUN_LOG = server.GAVO_ROOT / "logs" / "taprun.log"
KNN = ("SELECT TOP 10 obs_id, gavo_spectrum_distance(latent, 'miles_m0028') AS d "
       "FROM retrspect.ml_results ORDER BY d")


def _run_async(tap, query):
    job = tap.submit_job(query)
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=60)
    job.raise_if_error()
    rows = [tuple(str(v) for v in r) for r in job.fetch_result().to_table()]
    job_id = job.job_id
    job.delete()
    return job_id, rows


def test_async_jobs_run_in_warm_workers_with_the_sync_answer(tap):
    job_id, rows = _run_async(tap, KNN)
    assert rows == [tuple(str(v) for v in r) for r in tap.search(KNN).to_table()]
    assert rows[0][0] == "miles_m0028"
    assert f"taprun -- {job_id}" in TAPRUN_LOG.read_text()


def test_async_jobs_run_without_the_warm_server(tap):
    """With the warm server stopped, `gavo taprun` runs the job itself."""
    subprocess.run(["supervisorctl", "-c", str(serving.CONF_DIR / "supervisord.conf"),
                    "stop", "taprun"], check=True, capture_output=True)
    try:
        job_id, rows = _run_async(tap, KNN)
        assert rows[0][0] == "miles_m0028"
        assert f"taprun -- {job_id}" not in TAPRUN_LOG.read_text()
    finally:
        subprocess.run(["supervisorctl", "-c", str(serving.CONF_DIR / "supervisord.conf"),
                        "start", "taprun"], check=True, capture_output=True)
        _wait_for_warm_server()


def _wait_for_warm_server():
    import socket
    from retrspect.vo_services.taprun_server import SOCKET
    deadline = time.monotonic() + 30
    while True:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(SOCKET))
            return
        except OSError:
            assert time.monotonic() < deadline, "the warm TAP worker server is not back"
            time.sleep(0.2)
        finally:
            probe.close()


def test_an_async_job_in_a_warm_worker_can_be_aborted(tap):
    """DaCHS aborts by signalling the process it started; the signal
    reaches the forked worker, which ends the job ABORTED."""
    job = tap.submit_job("JUST HANG around")          # DaCHS's test query: sleeps
    try:
        job.run()
        deadline = time.monotonic() + 60
        while f"taprun -- {job.job_id}" not in TAPRUN_LOG.read_text():
            assert time.monotonic() < deadline, f"job still {job.phase}"
            time.sleep(0.2)
        worker = int(TAPRUN_LOG.read_text()
                     .split(f" for --ui stingy taprun -- {job.job_id}")[0]
                     .rsplit("worker ", 1)[1])
        time.sleep(1)                                 # the job records its start
        job.abort()
        deadline = time.monotonic() + 30
        while job.phase not in ("ABORTED", "ERROR", "COMPLETED"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert job.phase == "ABORTED"
        while Path(f"/proc/{worker}").exists():
            assert time.monotonic() < deadline, "the worker outlived its aborted job"
            time.sleep(0.2)
    finally:
        if job.phase not in ("ABORTED", "ERROR", "COMPLETED"):
            job.abort()
        job.delete()


def _transactions(psql, port):
    return int(psql(port=port, query="SELECT xact_commit + xact_rollback FROM pg_stat_database "
                           "WHERE datname = 'gavo'"))


def test_a_tap_query_runs_on_the_replica_with_the_primarys_results(tap, psql):
    """Each TAP query opens its own connection under the untrusted profile:
    the standby (pg_is_in_recovery) counts one transaction more per query."""
    assert replica.configured()
    assert psql(port=5433, query="SELECT pg_is_in_recovery()") == "t"
    query = "SELECT TOP 20 obs_id, ssa_collection FROM retrspect.raw_data ORDER BY obs_id"
    before = _transactions(psql, 5433)
    for _ in range(10):
        rows = [tuple(str(v) for v in r) for r in tap.search(query).to_table()]
    deadline = time.monotonic() + 10
    while _transactions(psql, 5433) - before < 10 and time.monotonic() < deadline:
        time.sleep(0.2)                 # statistics are flushed as backends exit
    assert _transactions(psql, 5433) - before >= 10
    primary = psql(port=5432, query="SELECT obs_id, ssa_collection FROM retrspect.raw_data "
                          "ORDER BY obs_id LIMIT 20")
    assert rows == [tuple(line.split("|")) for line in primary.splitlines()]


def test_a_tap_upload_runs_on_the_primary(tap):
    """A standby refuses the upload's table: uploads are routed to the primary."""
    from astropy.table import Table
    ids = Table({"want": ["miles_m0028", "stelib_hd005820"]})
    result = tap.search("SELECT r.obs_id FROM retrspect.raw_data AS r JOIN "
                        "TAP_UPLOAD.ids AS u ON r.obs_id = u.want ORDER BY r.obs_id",
                        uploads={"ids": ids}).to_table()
    assert [str(v) for v in result["obs_id"]] == ["miles_m0028", "stelib_hd005820"]


def test_replica_catches_up_after_a_write(psql):
    """WAL written on the primary (here a logical message, 1 MB) is
    replayed on the standby, and wait_caught_up waits for exactly that."""
    psql(port=5432, query="SELECT pg_logical_emit_message(false, 'retrspect', repeat('x', 1000000))")
    assert replica.wait_caught_up(timeout=30) < 30
    assert replica.bytes_behind() < 1_000_000   # the message was replayed


def test_check_reports_every_process_and_the_replica():
    result = subprocess.run([RETRSPECT, "check"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    server_line = next(line for line in result.stdout.splitlines() if " server " in line)
    for process in serving.processes():
        assert f"{process.name} running pid {process.pid}" in server_line
    assert "TAP queries on the streaming replica (port 5433)" in result.stdout


def test_serve_stop_leaves_no_process_behind_and_start_serves_again(base_url):
    pids = [p.pid for p in serving.processes()]
    assert subprocess.run([RETRSPECT, "serve", "stop"], timeout=120).returncode == 0
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert alive == []
    assert not serving.supervisor_running()
    left = subprocess.run(["pgrep", "-f", "dachs serve start|haproxy -db|supervisord -c"],
                          capture_output=True, text=True).stdout.split()
    assert left == []
    assert not server.is_running()
    assert subprocess.run([RETRSPECT, "serve", "start"], timeout=300).returncode == 0
    assert server.is_running() and all(server.backends_answering().values())
