"""Serving benchmark: the mix of issue 16 against the multi-process server.

Clients repeat, with no think time, an operation drawn at random from: the
README's sync TAP kNN query for a random spectrum, an SSAP queryData with
POS at a random position and SIZE = 5 deg, and a getData of a random
spectrum.  Three rounds:

1. one client (the baseline, measured in the same run);
2. ``--clients`` clients (default 32);
3. the same clients while one DaCHS process is killed (SIGKILL) a third
   of the way in: every request must still succeed (the balancer retries
   on another process), and supervisord must bring the process back.

    python tests/benchmarks/bench_serve.py
    python tests/benchmarks/bench_serve.py --clients 8 --seconds 10
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import BASE, embedded_obs_ids, run_round  # noqa: E402
from common import save  # noqa: E402

MIX = {"knn": 1, "ssap_cone": 1, "getdata": 1}
TARGETS = {"throughput_per_s": 25.0, "p95_ms": 2000.0, "speedup": 1.6, "errors": 0}


def kill_one_process(after: float, report: dict) -> threading.Thread:
    """SIGKILL the first DaCHS process after ``after`` seconds; record its
    pid, the new pid and how long until the new process answered."""
    from retrspect.vo_services import server, serving

    def run():
        time.sleep(after)
        victim = next(p for p in serving.processes() if p.port is not None)
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        report.update(name=victim.name, pid=victim.pid, port=victim.port)
        while time.monotonic() - killed < 120:
            now = {p.name: p for p in serving.processes()}.get(victim.name)
            if now and now.running and now.pid != victim.pid and \
                    server.backends_answering()[victim.port]:
                report.update(new_pid=now.pid,
                              back_after_s=round(time.monotonic() - killed, 1))
                return
            time.sleep(0.2)
        report["back_after_s"] = None

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args(argv)

    from retrspect.vo_services import server
    obs_ids = embedded_obs_ids()
    processes = server.describe_processes()
    one = run_round(1, args.seconds, obs_ids, MIX)
    many = run_round(args.clients, args.seconds, obs_ids, MIX)
    killed = {}
    killer = kill_one_process(args.seconds / 3, killed)
    faulted = run_round(args.clients, args.seconds, obs_ids, MIX)
    killer.join()
    speedup = many["throughput_per_s"] / max(one["throughput_per_s"], 1e-9)
    errors = sum(many["errors"].values())
    fault_errors = sum(faulted["errors"].values())
    figures = {
        "clients": args.clients, "seconds_per_round": args.seconds, "mix": MIX,
        "processes": processes, "cores": len(os.sched_getaffinity(0)),
        "one_client": one, "many_clients": many, "many_clients_one_killed": faulted,
        "killed": killed, "speedup": round(speedup, 2), "targets": TARGETS,
        "met": {
            "throughput": many["throughput_per_s"] >= TARGETS["throughput_per_s"],
            "p95": many["all_latency_ms"].get("p95", 1e9) <= TARGETS["p95_ms"],
            "no_errors": errors == 0,
            "speedup": speedup >= TARGETS["speedup"],
            "no_errors_while_killed": fault_errors == 0,
            "killed_process_came_back": killed.get("back_after_s") is not None,
        },
    }
    print(save("serve", figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
