"""Warm async TAP workers: DaCHS imported and the archive's RDs parsed once.

DaCHS runs each async TAP job in a new process, ``gavo --ui stingy taprun
-- <jobId>``, found on PATH.  Measured (``tests/benchmarks/bench_async_tap.py``,
a profile of ``gavo taprun``): a fresh process spends about 1.1 s importing
DaCHS and 1.7 s parsing the RDs of the query's tables (``retrspect/q`` and
DaCHS's mixins) before a 50 ms kNN query.

The venv's ``gavo`` (written by ``scripts/setup_python.sh``) calls
:func:`main`.  For ``taprun`` it asks this server, which runs under
supervisord with DaCHS imported and the RDs loaded, to fork a child that runs
DaCHS's own ``gavo`` command line with the same arguments, environment and
working directory.  The ``gavo`` process waits for the child and exits with
its status, and passes SIGINT and SIGTERM on to it (DaCHS aborts a job by
signalling the pid it started), so for DaCHS nothing changed.  Without the
server (not started, or its socket gone) ``gavo taprun`` runs in-process as
before.  The server is restarted after each import (:func:`restart`), so its
children never run with outdated RDs.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
from pathlib import Path

#: the server's socket; only its owner (dachsroot, as the DaCHS server) may connect
SOCKET = Path(os.environ.get("RETRSPECT_TAPRUN_SOCKET",
                           "/var/gavo/state/retrspect-taprun.sock"))
#: the RDs a TAP query on the archive's tables needs
PRELOAD_RDS = ("//tap", "//uws", "retrspect/q")


def _dachs_cli() -> int:
    from gavo.user.cli import main as gavo_main
    return gavo_main()


def main() -> int:
    """The venv's ``gavo`` command."""
    if "taprun" in sys.argv[1:] and SOCKET.exists():
        try:
            return run_in_warm_worker(sys.argv)
        except (ConnectionError, FileNotFoundError, json.JSONDecodeError):
            pass                           # no server answering: run it ourselves
    return _dachs_cli()


# ------------------------------------------------------------------ client --

def _read_message(sock, buffer: bytearray) -> dict | None:
    while b"\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return json.loads(line)


def run_in_warm_worker(argv: list[str]) -> int:
    """Have the server fork a worker for ``argv``; wait for it, pass signals
    on, return its exit status."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(SOCKET))
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    sock.sendall(json.dumps(request).encode() + b"\n")
    buffer = bytearray()
    started = _read_message(sock, buffer)
    if started is None:
        raise ConnectionError("the taprun server closed the connection")
    child = started["pid"]

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    ended = _read_message(sock, buffer)
    if ended:
        return int(ended["exit"])
    # the server was restarted while the job ran: the worker goes on (it
    # manages its job's phase itself); wait for it as DaCHS waits for us
    import time
    while Path(f"/proc/{child}").exists():
        time.sleep(0.1)
    return 0


# ------------------------------------------------------------------ server --

def _drop_connection_pools() -> None:
    """Close the database connections preloading opened: a forked child
    must open its own (the pools are created again on first use)."""
    from gavo.base import sqlsupport
    for name in ("getTableConn", "getUntrustedConn", "getAdminConn",
                 "getWritableTableConn", "getWritableUntrustedConn", "getWritableAdminConn"):
        function = getattr(sqlsupport, name).__wrapped__
        for cell in function.__closure__ or ():
            pools = cell.cell_contents
            if isinstance(pools, list):
                for pool in pools:
                    pool.closeall()
                pools.clear()


def preload() -> None:
    """Import what ``gavo taprun`` imports and parse the archive's RDs."""
    from gavo import api, base  # noqa: F401
    from gavo.protocols import taprunner  # noqa: F401
    from gavo.user import cli  # noqa: F401
    for rd_id in PRELOAD_RDS:
        api.getRD(rd_id)
    _drop_connection_pools()


def _run_child(request: dict) -> None:
    """In the forked child: become the ``gavo`` process DaCHS started."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    code = 1
    try:
        code = _dachs_cli() or 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """Accept requests on :data:`SOCKET`, fork a worker for each, report
    each worker's pid and, when it ends, its exit status."""
    # listen first: a job arriving while DaCHS loads waits for it (about
    # 1.5 s) instead of falling back to a cold start
    if SOCKET.exists():
        SOCKET.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(SOCKET))
    os.chmod(SOCKET, 0o600)
    listener.listen(64)
    preload()
    print(f"taprun server: DaCHS and {', '.join(PRELOAD_RDS)} loaded; "
          f"listening on {SOCKET}", flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    while True:
        for key, _ in selector.select(timeout=0.02):
            connection, _ = listener.accept()
            try:
                connection.settimeout(5)
                request = _read_message(connection, bytearray())
            except (OSError, ValueError):
                connection.close()
                continue
            if request is None:
                connection.close()
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                connection.close()
                _run_child(request)
            print(f"taprun server: worker {pid} for {' '.join(request['argv'][1:])}",
                  flush=True)
            children[pid] = connection
            try:
                connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            except OSError:
                pass
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            connection = children.pop(pid, None)
            if connection is not None:
                try:
                    connection.sendall(json.dumps(
                        {"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                except OSError:
                    pass
                connection.close()


if __name__ == "__main__":
    serve()
