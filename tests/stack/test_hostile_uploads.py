"""Hostile uploads to search by example and TAP, on the running server.
"""
from __future__ import annotations

import io
import re
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir


set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "retrspect-hypothesis"))

#: per-file bounds for refusing a hostile file
MAX_SECONDS = 5.0


BYEXAMPLE_PATH = "/retrspect/q/byexample/api"


def _server_memory():
    """(VmRSS, VmHWM) of the DaCHS server processes together, in bytes."""
    from retrspect.vo_services import serving
    fields = {"VmRSS": 0, "VmHWM": 0}
    for process in serving.processes():
        if process.port is None:
            continue                                    # the balancer
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in fields:
                fields[key] += int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def _query_status(content):
    """(status, message) of the QUERY_STATUS INFO of a VOTable response."""
    from astropy.io.votable import parse
    votable = parse(io.BytesIO(content))
    for resource in votable.resources:
        for info in resource.infos:
            if info.name == "QUERY_STATUS":
                return info.value, info.content or ""
    return None, ""


def _upload(base_url, name, data):
    import requests
    return requests.post(
        base_url + BYEXAMPLE_PATH,
        data={"UPLOAD": "spectrum,param:upload", "k": "3"},
        files={"upload": (name, data)}, timeout=120)


def test_search_by_example_refuses_every_hostile_upload(base_url, corpus,
                                                        secret, canary,
                                                        watchdog, assert_no_leak):
    import requests
    from retrspect.vo_services.byexample import MAX_UPLOAD_BYTES

    rss_before, hwm_before = _server_memory()
    failures, sent = [], 0
    for hostile in corpus:
        if hostile.path.stat().st_size > MAX_UPLOAD_BYTES:
            continue  # refused for its size (test_byexample covers that)
        sent += 1
        start = time.perf_counter()
        response = _upload(base_url, hostile.name, hostile.path.read_bytes())
        seconds = time.perf_counter() - start
        assert_no_leak(response.text, secret)
        if response.status_code >= 500:
            failures.append(f"{hostile.name}: HTTP {response.status_code}")
            continue
        status, message = _query_status(response.content)
        if status != "ERROR":
            failures.append(f"{hostile.name}: QUERY_STATUS {status}")
        elif "the upload is empty" in message:  # the service's own check
            if hostile.path.stat().st_size:
                failures.append(f"{hostile.name}: called empty")
        elif hostile.name not in message or not re.search(
                hostile.reason, message, re.IGNORECASE):
            failures.append(f"{hostile.name}: message {message!r} does not "
                            f"match {hostile.reason!r}")
        if seconds > 2 * MAX_SECONDS:
            failures.append(f"{hostile.name}: answered in {seconds:.1f} s")
    assert not failures, "\n".join(failures)
    assert sent >= 30
    assert canary[1] == [], "the server fetched a URL named in an upload"

    # still serving, and the hostile uploads did not balloon its memory
    ssap = requests.get(f"{base_url}/retrspect/q/ssa/ssap.xml",
                        params={"REQUEST": "queryData", "MAXREC": 1}, timeout=60)
    assert ssap.status_code == 200
    assert _query_status(ssap.content)[0] in ("OK", "OVERFLOW")
    rss_after, hwm_after = _server_memory()
    print(f"server RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MB,"
          f" peak {hwm_before / 2**20:.0f} -> {hwm_after / 2**20:.0f} MB")
    assert hwm_after - hwm_before < 1024 * 2**20


def test_hostile_upload_name_is_escaped(base_url):
    name = '"><script>alert(1)</script>&amp;.fits'
    response = _upload(base_url, name, b"not a spectrum")
    assert response.status_code < 500
    status, message = _query_status(response.content)  # well-formed XML
    # the name arrives (the HTTP client percent-encodes its quote and slash)
    # and is quoted as text, never as markup
    assert status == "ERROR" and "<script>alert(1)" in message
    assert b"<script>" not in response.content


def test_search_by_example_refuses_a_loopback_url_upload(base_url, canary):
    import requests
    response = requests.post(
        base_url + BYEXAMPLE_PATH, timeout=60,
        data={"UPLOAD": f"spectrum,{canary[0]}byexample", "k": "3"})
    status, message = _query_status(response.content)
    assert response.status_code < 500 and status == "ERROR", response.text
    assert "not a public internet address" in message, message
    assert canary[1] == [], "the server fetched a loopback URL"


def test_tap_refuses_loopback_url_uploads_sync_and_async(base_url, canary):
    import pyvo
    import requests
    query = "SELECT * FROM TAP_UPLOAD.t"
    sync = requests.post(f"{base_url}/tap/sync", timeout=60, data={
        "REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query,
        "UPLOAD": f"t,{canary[0]}tap-sync"})
    status, message = _query_status(sync.content)
    assert status == "ERROR" and "not a public internet address" in message, \
        sync.text

    # async jobs run in a separate `gavo taprun` process
    job = pyvo.dal.AsyncTAPJob.create(
        f"{base_url}/tap", query,
        uploads={"t": f"{canary[0]}tap-async"})
    try:
        job.run().wait(phases={"COMPLETED", "ERROR", "ABORTED"}, timeout=120)
        assert job.phase == "ERROR"
        with pytest.raises(pyvo.DALQueryError,
                           match="not a public internet address"):
            job.raise_if_error()
    finally:
        job.delete()
    assert canary[1] == [], "the server fetched a loopback URL"
