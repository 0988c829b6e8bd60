"""Clients running while a DaCHS server process is killed (the serving and
campaign fault tests)."""
from __future__ import annotations


def run_clients_through_a_kill(client, n_clients: int, *, before_s=2.0, after_s=4.0):
    """Run ``client(n, stop)`` in ``n_clients`` threads; ``before_s`` seconds
    in, SIGKILL one DaCHS server process; stop them ``after_s`` later.
    Returns the killed process (its name, port and old pid)."""
    import os
    import signal
    import threading
    import time

    from retrspect.vo_services import serving
    stop = threading.Event()
    threads = [threading.Thread(target=client, args=(n, stop)) for n in range(n_clients)]
    for thread in threads:
        thread.start()
    time.sleep(before_s)
    victim = next(p for p in serving.processes() if p.port is not None)
    os.kill(victim.pid, signal.SIGKILL)
    time.sleep(after_s)
    stop.set()
    for thread in threads:
        thread.join()
    return victim
