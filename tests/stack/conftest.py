"""Tests against the running stack (DaCHS, PostgreSQL with pg_sphere and
pgvector, the real clients): every test in this folder is marked ``stack``,
so ``pytest -m "not stack"`` runs what needs no server."""
from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.stack)


# ---- a SAMP hub for the pages' SAMP buttons ----------------------------------

MTYPES = ("spectrum.load.ssa-generic", "table.load.votable")


class AutoConsent:
    """The web profile's consent dialog, answered yes: the hub hands this
    object its request and result queues; a thread answers each request."""

    def __init__(self):
        import threading
        self.requests, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import queue
        import time
        while not self._stop.is_set():
            if getattr(self, "queue_request", None) is None:
                time.sleep(0.02)
                continue
            try:
                request = self.queue_request.get(timeout=0.1)
            except queue.Empty:
                continue
            self.requests.append(request)
            self.queue_result.put(True)

    def stop(self):
        self._stop.set()
        self._thread.join(2)


@pytest.fixture
def samp_receiver(tmp_path, monkeypatch):
    """An astropy SAMP hub with the web profile (on 21012: samp.js knows no
    other port) and a client standing in for SPLAT-VO and TOPCAT."""
    import threading
    from astropy.samp import SAMPHubServer, SAMPIntegratedClient, conf
    monkeypatch.setenv("HOME", str(tmp_path))        # its own ~/.samp
    monkeypatch.delenv("SAMP_HUB", raising=False)
    monkeypatch.setattr(conf, "use_internet", False)
    consent = AutoConsent()
    hub = SAMPHubServer(web_profile=True, web_profile_dialog=consent, web_port=21012,
                        lockfile=str(tmp_path / "samp.lock"), addr="127.0.0.1",
                        pool_size=2)
    hub.start()
    client = None
    try:
        assert hub._web_profile, "port 21012 is taken: no web profile"
        got, events = {}, {m: threading.Event() for m in MTYPES}
        client = SAMPIntegratedClient(name="SPLAT-VO and TOPCAT stand-in")
        client.connect(hub=hub, pool_size=1)

        def receive(private_key, sender_id, mtype, params, extra):
            got[mtype] = params
            events[mtype].set()

        for mtype in MTYPES:
            client.bind_receive_notification(mtype, receive)
        yield got, events, consent
    finally:
        if client is not None and client.is_connected:
            client.disconnect()
        hub.stop()
        consent.stop()
