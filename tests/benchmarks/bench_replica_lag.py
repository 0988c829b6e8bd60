"""Replica lag benchmark: how far the read replica falls behind during an
ingest, and how long it takes to catch up.

Samples the primary's ``pg_stat_replication`` (bytes of WAL not yet
replayed, and ``replay_lag``) every 0.25 s: first for ``--idle`` seconds
with nothing importing (the baseline, in the same run), then while the
ingest benchmark's augmented spectra are imported with every shipped model
into the bench schema (``dachs imp``, the demo's own import path), and
until the replica has replayed all of it.

    python tests/benchmarks/bench_replica_lag.py --n 10000
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import make_files, run_import  # noqa: E402
from common import BENCH_RD, dachs, save, write_bench_rd  # noqa: E402

LAG_SQL = ("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, "
           "COALESCE(extract(epoch FROM replay_lag), 0) FROM pg_stat_replication "
           "WHERE application_name <> 'pg_basebackup' LIMIT 1")


def lag_now() -> tuple[int, float]:
    out = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-d", "gavo", "-Atc",
                          LAG_SQL], capture_output=True, text=True, check=True).stdout
    behind, seconds = out.strip().split("|")
    return int(behind), float(seconds)


def sample(stop: threading.Event, into: list) -> None:
    while not stop.is_set():
        into.append((time.monotonic(), *lag_now()))
        time.sleep(0.25)


def summary(samples) -> dict:
    if not samples:
        return {}
    behind = np.array([s[1] for s in samples], dtype=float)
    lag = np.array([s[2] for s in samples], dtype=float)
    return {"samples": len(samples),
            "bytes_behind_max": int(behind.max()),
            "bytes_behind_p95": int(np.percentile(behind, 95)),
            "replay_lag_s_max": round(float(lag.max()), 3),
            "replay_lag_s_p95": round(float(np.percentile(lag, 95)), 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--idle", type=float, default=5.0)
    args = parser.parse_args(argv)
    root = make_files(args.n)
    write_bench_rd(root)

    idle, during = [], []
    stop = threading.Event()
    thread = threading.Thread(target=sample, args=(stop, idle))
    thread.start()
    time.sleep(args.idle)
    stop.set()
    thread.join()

    stop = threading.Event()
    thread = threading.Thread(target=sample, args=(stop, during))
    thread.start()
    result = run_import("all spaces")
    ended = time.monotonic()
    while lag_now()[0] > 0 and time.monotonic() - ended < 300:
        time.sleep(0.1)
    caught_up = time.monotonic() - ended
    stop.set()
    thread.join()
    dachs("drop", BENCH_RD, check=False)
    figures = {"n": args.n, "import": {k: result[k] for k in
                                       ("command_wall_s", "spectra_per_s_end_to_end")},
               "idle": summary(idle), "during_ingest": summary(during),
               "caught_up_s_after_import": round(caught_up, 2)}
    print(save("replica_lag", figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
