"""Async TAP benchmark: where the seconds of a small job go.

A 10-row kNN job is submitted with PHASE=RUN and its phase polled every
20 ms (a client that polls as fast as is reasonable), ``--repeat`` times.
From the job's own UWS record (creation, start and end times) and the
client's clock, each job's time splits into:

* submit -> start: DaCHS queues the job, spawns ``gavo taprun``, which
  imports DaCHS and records the start;
* start -> end: the query and writing the result;
* end -> seen: until the client's poll notices.

Baselines in the same run: the same query over sync TAP, the time to
import DaCHS's TAP runner in a fresh Python (what each job pays), and
pyvo's ``run``/``wait``/``fetch_result`` as a user would call them.

    python tests/benchmarks/bench_async_tap.py --repeat 10
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import BASE  # noqa: E402
from common import VENV_BIN, save  # noqa: E402

QUERY = ("SELECT TOP 10 obs_id, gavo_spectrum_distance(latent, 'miles_m0028') AS d "
         "FROM retrspect.ml_results ORDER BY d")
UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"


def _utc(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def one_job(session) -> dict:
    started = time.time()
    response = session.post(f"{BASE}/tap/async", data={
        "LANG": "ADQL", "REQUEST": "doQuery", "QUERY": QUERY},
        allow_redirects=False, timeout=60)
    job_url = response.headers["Location"]
    if not job_url.startswith("http"):
        job_url = BASE + job_url
    session.post(f"{job_url}/phase", data={"PHASE": "RUN"}, allow_redirects=False,
                 timeout=60).raise_for_status()
    submitted = time.time()
    deadline = submitted + 120
    while True:
        phase = session.get(f"{job_url}/phase", timeout=60).text.strip()
        if phase in ("COMPLETED", "ERROR", "ABORTED"):
            break
        if time.time() > deadline:
            raise RuntimeError(f"job {job_url} still {phase} after 120 s")
        time.sleep(0.02)
    seen = time.time()
    from lxml import etree
    record = etree.fromstring(session.get(job_url, timeout=60).content)
    start = _utc(record.findtext(f"{UWS}startTime"))
    end = _utc(record.findtext(f"{UWS}endTime"))
    result = session.get(f"{job_url}/results/result", timeout=60)
    fetched = time.time()
    session.delete(job_url, timeout=60)
    if phase != "COMPLETED" or b"miles_m0028" not in result.content:
        raise RuntimeError(f"job {job_url}: {phase}")
    return {"total_s": fetched - started, "create_and_run_s": submitted - started,
            "submit_to_start_s": start - started if start else None,
            "start_to_end_s": end - start if start and end else None,
            "end_to_seen_s": seen - end if end else None,
            "fetch_s": fetched - seen}


def sync_query(session) -> float:
    started = time.perf_counter()
    response = session.post(f"{BASE}/tap/sync", data={
        "LANG": "ADQL", "REQUEST": "doQuery", "QUERY": QUERY}, timeout=60)
    response.raise_for_status()
    return time.perf_counter() - started


def import_seconds() -> float:
    started = time.perf_counter()
    subprocess.run([str(VENV_BIN / "python"), "-c", "import gavo.protocols.taprunner"],
                   check=True, capture_output=True, cwd="/")
    return time.perf_counter() - started


def pyvo_job() -> float:
    import pyvo
    started = time.perf_counter()
    job = pyvo.dal.TAPService(BASE + "/tap").submit_job(QUERY)
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=60)
    job.fetch_result()
    seconds = time.perf_counter() - started
    job.delete()
    return seconds


def _median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    session = requests.Session()
    jobs = [one_job(session) for _ in range(args.repeat)]
    figures = {
        "query": QUERY, "repeat": args.repeat,
        "async_median_s": {key: _median([j[key] for j in jobs]) for key in jobs[0]},
        "baselines_median_s": {
            "sync_same_query": _median([sync_query(session) for _ in range(args.repeat)]),
            "import_dachs_taprunner": _median([import_seconds() for _ in range(5)]),
            "pyvo_run_wait_fetch": _median([pyvo_job() for _ in range(min(5, args.repeat))]),
        },
    }
    print(save("async_tap", figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
