"""Shared pieces of the benchmarks: the bench RD, memory sampling, results.

Benchmarks are not tests: each measures ours against a baseline in the same
run and writes its figures to ``tests/benchmarks/results/<name>.json``.
They run against the real stack, in a schema of their own
(``retrspect_bench``) that the demo never sees.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
BENCH_RD_DIR = Path("/var/gavo/inputs/retrspect_bench")
BENCH_RD = "retrspect_bench/q"
VENV_BIN = Path(os.environ.get("RETRSPECT_VENV", "/opt/retrspect/venv")) / "bin"


def write_bench_rd(data_dir: Path) -> None:
    """The demo's RD, in schema retrspect_bench, without ObsCore and
    services, importing from ``data_dir``: the same import path as the demo.
    """
    text = (REPO / "resdir" / "q.rd").read_text(encoding="utf-8")
    text = text.replace('schema="retrspect"', 'schema="retrspect_bench"')
    text = re.sub(r"<mixin[^>]*>//obscore#publishSSAPMIXC</mixin>", "", text,
                  flags=re.S)
    text = re.sub(r"<regSuite.*?</regSuite>", "", text, flags=re.S)
    text = re.sub(r"<coverage>.*?</coverage>", "", text, flags=re.S)
    BENCH_RD_DIR.mkdir(parents=True, exist_ok=True)
    (BENCH_RD_DIR / "q.rd").write_text(text)
    link = BENCH_RD_DIR / "data"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(data_dir)
    subprocess.run(["chown", "-R", "-h", "dachsroot:gavo", str(BENCH_RD_DIR)],
                   check=True)


def dachs(*args: str, env: dict | None = None, check: bool = True
          ) -> subprocess.CompletedProcess:
    """A DaCHS command on the venv, as dachsroot, output captured."""
    full_env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}",
                    **(env or {}))
    result = subprocess.run(["runuser", "-u", "dachsroot", "--",
                             str(VENV_BIN / "dachs"), *args],
                            env=full_env, capture_output=True,
                            encoding="utf-8", errors="replace")
    if check and result.returncode != 0:
        raise RuntimeError(f"dachs {' '.join(args)} failed:\n"
                           f"{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return result


class PeakMemory:
    """Peak resident memory (MB) of a process tree, sampled every 0.1 s."""

    def __init__(self):
        self.peak_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def _tree_rss(root: int) -> float:
        children: dict[int, list[int]] = {}
        rss: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
                children.setdefault(int(stat[1]), []).append(int(entry.name))
                rss[int(entry.name)] = int(stat[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                continue
        total, todo = 0, [root]
        while todo:
            pid = todo.pop()
            total += rss.get(pid, 0)
            todo.extend(children.get(pid, []))
        return total / 1e6

    def watch(self, pid: int) -> None:
        def run():
            while not self._stop.is_set():
                self.peak_mb = max(self.peak_mb, self._tree_rss(pid))
                time.sleep(0.1)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def save(name: str, figures: dict) -> Path:
    """Write a benchmark's figures (with the machine they come from)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures = {"benchmark": name,
               "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "machine": {"cores": os.cpu_count(),
                           "python": platform.python_version()},
               **figures}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return path


#: a laptop screen
BROWSER_WINDOW = (1366, 900)


def headless_chromium(*extra_flags: str, log_console: bool = False):
    """Debian's Chromium, headless, driven by Selenium, laptop-sized (for
    the browser tests, the explorer benchmark and its screenshots).  The
    flags keep it off the network this machine does not have."""
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=%d,%d" % BROWSER_WINDOW,
                 *extra_flags):
        options.add_argument(flag)
    if log_console:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
