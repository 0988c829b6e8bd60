"""Load benchmark: 50 concurrent clients against the local server.

Each client loops, for a bounded time, over what archive users do: sync TAP
kNN queries, SSAP queries, getData of SDM spectra through datalink, and
async TAP jobs.  Recorded: errors, latency p50/p95 per operation, and the
server's memory (RSS of the DaCHS process) before, after a first round and
after a second round of the same load, so growth across rounds shows.

    python tests/benchmarks/bench_load.py                # 50 clients, 2 x 60 s
    python tests/benchmarks/bench_load.py --clients 10 --seconds 20
"""
from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

BASE = "http://localhost:8080"
#: the load of bench_load's rounds: operation -> relative weight
LOAD_WEIGHTS = {"knn": 4, "ssap": 3, "getdata": 3, "async": 1}


def server_rss_mb() -> float:
    """Resident memory of all DaCHS server processes together."""
    from retrspect.vo_services import serving
    total = 0.0
    for process in serving.processes():
        if process.port is None or process.pid is None:
            continue                                    # the balancer
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def _check_votable(content: bytes) -> None:
    if b'name="QUERY_STATUS" value="ERROR"' in content:
        raise RuntimeError(content[-400:].decode(errors="replace"))


def operations(obs_ids, session):
    import pyvo

    tap = pyvo.dal.TAPService(BASE + "/tap", session=session)

    def knn():
        obs_id = random.choice(obs_ids)
        response = session.post(BASE + "/tap/sync", data={
            "LANG": "ADQL", "REQUEST": "doQuery",
            "QUERY": "SELECT TOP 10 obs_id FROM retrspect.ml_results ORDER BY "
                     f"gavo_spectrum_distance(latent, '{obs_id}')"}, timeout=120)
        response.raise_for_status()
        _check_votable(response.content)

    def ssap_cone():
        response = session.get(BASE + "/retrspect/q/ssa/ssap.xml", params={
            "REQUEST": "queryData", "SIZE": "5",
            "POS": f"{random.uniform(0, 360):.3f},{random.uniform(-90, 90):.3f}"},
            timeout=120)
        response.raise_for_status()
        _check_votable(response.content)

    def ssap():
        params = random.choice([
            {"TARGETNAME": "HD004307"},
            {"POS": f"{random.uniform(0, 360):.3f},{random.uniform(-60, 60):.3f}",
             "SIZE": "5"},
            {"BAND": "9.4e-7/9.6e-7", "MAXREC": "50"}])
        response = session.get(BASE + "/retrspect/q/ssa/ssap.xml",
                               params={"REQUEST": "queryData", **params},
                               timeout=120)
        response.raise_for_status()
        _check_votable(response.content)

    def getdata():
        obs_id = random.choice(obs_ids)
        response = session.get(BASE + "/retrspect/q/sdl/dlget", params={
            "ID": f"ivo://retrspect.example/~?retrspect/{obs_id}"}, timeout=120)
        response.raise_for_status()
        _check_votable(response.content)
        if b"<TABLEDATA>" not in response.content and b"<BINARY" not in \
                response.content:
            raise RuntimeError("getData returned no table")

    def async_job():
        job = tap.submit_job("SELECT ssa_collection, COUNT(*) AS n FROM "
                             "retrspect.spectra GROUP BY ssa_collection")
        try:
            job.run()
            job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=120)
            job.raise_if_error()
            if len(job.fetch_result()) < 3:
                raise RuntimeError("async result too short")
        finally:
            job.delete()

    return {"knn": knn, "ssap": ssap, "ssap_cone": ssap_cone, "getdata": getdata,
            "async": async_job}


def _percentiles(values) -> dict:
    if not values:
        return {}
    return {"p50": round(float(np.percentile(values, 50)) * 1e3, 1),
            "p95": round(float(np.percentile(values, 95)) * 1e3, 1)}


def run_round(clients: int, seconds: float, obs_ids, weights=None) -> dict:
    """``clients`` threads, each repeating operations drawn by ``weights``
    (default :data:`LOAD_WEIGHTS`) for ``seconds``, no think time."""
    import requests

    latencies, errors = defaultdict(list), defaultdict(list)
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    weights = weights or LOAD_WEIGHTS

    def client(seed):
        rng = random.Random(seed)
        session = requests.Session()
        ops = operations(obs_ids, session)
        names = [n for n, w in weights.items() for _ in range(w)]
        while time.monotonic() < stop:
            name = rng.choice(names)
            start = time.perf_counter()
            try:
                ops[name]()
                with lock:
                    latencies[name].append(time.perf_counter() - start)
            except Exception as err:  # every failure is counted, not hidden
                with lock:
                    errors[name].append(f"{type(err).__name__}: {err}"[:300])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "requests": {n: len(v) for n, v in latencies.items()},
        "errors": {n: len(v) for n, v in errors.items()},
        "error_examples": {n: v[:3] for n, v in errors.items()},
        "latency_ms": {n: {"p50": round(float(np.percentile(v, 50)) * 1e3, 1),
                           "p95": round(float(np.percentile(v, 95)) * 1e3, 1)}
                       for n, v in latencies.items() if v},
        "all_latency_ms": _percentiles([x for v in latencies.values() for x in v]),
        "throughput_per_s": round(sum(map(len, latencies.values())) / seconds, 1),
    }


def embedded_obs_ids() -> list[str]:
    """The spectra with a generic latent (a kNN query by any other is
    refused, as it should be)."""
    import pyvo
    return [str(v) for v in pyvo.dal.TAPService(BASE + "/tap").search(
        "SELECT obs_id FROM retrspect.ml_results WHERE latent IS NOT NULL",
        maxrec=100000)["obs_id"]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)

    obs_ids = embedded_obs_ids()
    memory = {"before_mb": round(server_rss_mb(), 1)}
    first = run_round(args.clients, args.seconds, obs_ids)
    memory["after_round1_mb"] = round(server_rss_mb(), 1)
    second = run_round(args.clients, args.seconds, obs_ids)
    memory["after_round2_mb"] = round(server_rss_mb(), 1)
    growth = memory["after_round2_mb"] - memory["after_round1_mb"]
    errors = sum(first["errors"].values()) + sum(second["errors"].values())
    figures = {"clients": args.clients, "seconds_per_round": args.seconds,
               "round1": first, "round2": second, "server_memory": memory,
               "memory_growth_round2_mb": round(growth, 1),
               "total_errors": errors,
               "met": {"no_errors": errors == 0,
                       "no_memory_growth": growth <= 0.05 * memory[
                           "after_round1_mb"]}}
    print(save("load", figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
