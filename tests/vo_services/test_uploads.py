"""URL uploads: only public addresses are fetched (retrspect.vo_services.uploads).
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir


set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "retrspect-hypothesis"))

@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1",
    "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1",
    "255.255.255.255", "::1", "::", "fe80::1%eth0", "fc00::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::7f00:1", "ff02::1"])
def test_non_public_addresses_are_refused(address):
    from retrspect.vo_services.uploads import UploadRefused, check_address
    with pytest.raises(UploadRefused, match="not a public internet address"):
        check_address(address)


@pytest.mark.parametrize("address", [
    "8.8.8.8", "193.196.39.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    from retrspect.vo_services.uploads import check_address
    check_address(address)


@pytest.mark.parametrize("url, reason", [
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("ftp://127.0.0.1/x", "scheme 'ftp' is not allowed"),
    ("data:text/plain,hello", "scheme 'data' is not allowed"),
    ("http://localhost:9/", "is not a public internet address"),
    ("http://[::1]:9/", "is not a public internet address"),
    ("https://127.0.0.1:9/", "is not a public internet address")])
def test_upload_urls_refused_in_process(url, reason):
    from gavo import base

    from retrspect.vo_services.uploads import open_public_url
    with pytest.raises(base.ValidationError, match=re.escape(reason)):
        open_public_url(url)
