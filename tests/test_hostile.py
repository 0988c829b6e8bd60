"""Hostile input (issue 6, item 4): broken and malicious spectrum files are
refused with a clear reason by the readers, the ingest pipeline and the
search-by-example service, in bounded time and memory, reading nothing
outside the file; property-based tests of the readers and of the vector
literals the nearest-spectrum ADQL functions accept.

The corpus is written at test time by :mod:`hostile_corpus` (nothing large
is committed); each file carries the reason its refusal must give.  Peak
memory is read from ``/proc/self/status`` (VmHWM, reset per file through
``/proc/self/clear_refs``), so a reader that loaded a bomb into memory
fails here even if it refused the file afterwards.
"""
from __future__ import annotations

import faulthandler
import gzip
import io
import math
import re
import secrets
import shutil
import struct
import tempfile
import threading
import time
from datetime import timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.extra.numpy import arrays

import hostile_corpus
from hostile_corpus import PASSWD_MARKERS
from retrspect.ingest.readers import safety as readers
from retrspect.ingest.bundled import package_dir
from retrspect.ingest.pipeline import IngestOptions, process_chunk
from retrspect.ingest.readers import read_spectra
from retrspect.ingest.errors import ReaderError
from retrspect.vo_services.similarity import (
    FLOAT32_MAX,
    VectorLiteralError,
    parse_vector_literal,
    vector_sql,
)

# hypothesis keeps caches in .hypothesis/ of the working directory; tests
# write only into temporary directories (no example database either)
set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "retrspect-hypothesis"))

TEMPLATES = package_dir("mangadap") / "data" / "spectral_templates"
MANGADAP_TESTS = package_dir("mangadap") / "data" / "tests"
LINETOOLS = package_dir("linetools") / "spectra" / "tests" / "files"
MILES = TEMPLATES / "miles" / "MILES_res2.50_star_m0028V.fits"

#: per-file bounds for refusing a hostile file
MAX_SECONDS = 5.0
#: peak resident memory a refusal may add.  Reading the 200 MB image or
#: any bomb would add far more; the largest refusal here (a gzipped VOTable
#: read up to the 32 MiB text limit) adds about 20 MB.
MAX_PEAK_GROWTH = 64 * 2**20
BYEXAMPLE_PATH = "/retrspect/q/byexample/api"


# --------------------------------------------------------------------------
# Fixtures: what a leak would show up in
# --------------------------------------------------------------------------

class _Canary(BaseHTTPRequestHandler):
    """Records every request; a reader that fetches anything shows here."""

    seen: list = []

    def _record(self):
        self.seen.append(f"{self.command} {self.path}")
        body = b"CANARY"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _record

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def canary():
    """``(url, requests)`` of a local HTTP listener."""
    _Canary.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canary)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", _Canary.seen
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def secret(tmp_path_factory):
    """A local file whose random token must never appear in any output."""
    path = tmp_path_factory.mktemp("secret") / "secret.txt"
    path.write_text(f"TOKEN-{secrets.token_hex(16)}\n")
    path.chmod(0o644)  # readable by the server's user: a leak would work
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, canary, secret):
    directory = tmp_path_factory.mktemp("hostile")
    directory.chmod(0o755)
    return hostile_corpus.write_corpus(directory, base_fits=MILES,
                                       canary_url=canary[0], secret=secret)


def assert_no_leak(text, secret):
    """No line of /etc/passwd and not the secret token in ``text``."""
    token = secret.read_text().strip()
    assert token not in text
    lines = [line for line in Path("/etc/passwd").read_text().splitlines()
             if len(line) > 12]
    for marker in (*PASSWD_MARKERS, *lines):
        assert marker not in text, marker


# --------------------------------------------------------------------------
# Memory and time of one read
# --------------------------------------------------------------------------

def _status_bytes(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def measured(function, *args):
    """``(outcome, seconds, peak RSS growth in bytes)`` of a call; the
    outcome is the return value or the exception raised."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_bytes("VmRSS")
    start = time.perf_counter()
    try:
        outcome = function(*args)
    except Exception as exc:  # noqa: BLE001 - the caller checks the type
        outcome = exc
    seconds = time.perf_counter() - start
    return outcome, seconds, _status_bytes("VmHWM") - before


@pytest.fixture
def watchdog():
    """Dump every thread's stack and exit if the test hangs."""
    faulthandler.dump_traceback_later(600, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# --------------------------------------------------------------------------
# The corpus against the readers
# --------------------------------------------------------------------------

def test_corpus_is_large_and_varied(corpus):
    assert len(corpus) >= 30
    suffixes = {h.name.split(".", 1)[1] for h in corpus}
    assert {"fits", "fits.gz", "xml", "xml.gz", "csv"} <= suffixes


def test_every_hostile_file_is_refused_for_its_reason(corpus, secret, canary,
                                                      watchdog):
    failures, table = [], []
    for hostile in corpus:
        outcome, seconds, growth = measured(read_spectra, hostile.path)
        table.append(f"{hostile.name:34s} {seconds:6.3f} s "
                     f"{growth / 2**20:6.1f} MB  {outcome!s:.200}")
        if not isinstance(outcome, ReaderError):
            failures.append(f"{hostile.name}: {type(outcome).__name__} "
                            f"instead of ReaderError: {outcome!r:.300}")
            continue
        if outcome.path != str(hostile.path) or not str(outcome).startswith(
                f"{hostile.path}: "):
            failures.append(f"{hostile.name}: error does not name the file")
        if not re.search(hostile.reason, outcome.reason, re.IGNORECASE):
            failures.append(f"{hostile.name}: reason {outcome.reason!r} does "
                            f"not match {hostile.reason!r}")
        if seconds > MAX_SECONDS:
            failures.append(f"{hostile.name}: took {seconds:.1f} s")
        if growth > MAX_PEAK_GROWTH:
            failures.append(f"{hostile.name}: peak RSS grew by "
                            f"{growth / 2**20:.0f} MB")
        assert_no_leak(str(outcome), secret)
    print("\n".join(table))
    assert not failures, "\n".join(failures)
    assert canary[1] == [], "a reader fetched a URL"


def test_limits_are_what_the_corpus_exceeds():
    """The corpus's bombs are sized against these values; guard them."""
    assert readers.MAX_INPUT_BYTES == 256 * 2**20
    assert readers.MAX_FITS_DATA_BYTES < 4 * 50_000_000  # the 5e7-pixel image
    assert readers.MAX_HEADER_CARDS < 1_000_000
    assert readers.MAX_FITS_HDUS < 5000
    assert readers.MAX_XML_DEPTH < 100_000
    assert readers.MAX_TEXT_BYTES < hostile_corpus.BOMB_BYTES


def test_gzip_bomb_costs_bounded_work(corpus):
    """A 4 GiB bomb stops at the decompressed-size limit: the time is that
    of decompressing 256 MiB, not 4 GiB."""
    bomb = next(h for h in corpus if h.name == "bomb_fits.fits.gz")
    assert len(bomb.path.read_bytes()) < 8 * 2**20
    outcome, seconds, growth = measured(read_spectra, bomb.path)
    assert isinstance(outcome, ReaderError)
    assert f"{readers.MAX_INPUT_BYTES:,}" in outcome.reason
    assert seconds < 3.0
    assert growth < 32 * 2**20


def test_limits_apply_to_the_error_companion(tmp_path):
    """A flux file's error companion is read too: it goes through the same
    structural checks (here: a declared 2**31 pixels)."""
    flux = hostile_corpus.good_image(500)
    flux.writeto(tmp_path / "star_f.fits")
    (tmp_path / "star_e.fits").write_bytes(
        hostile_corpus.image_header(-32, 2**31) + b"\0" * 2880)
    with pytest.raises(ReaderError, match=r"error file star_e.fits: HDU 0 "
                       r"declares .* limit") as caught:
        read_spectra(tmp_path / "star_f.fits")
    assert caught.value.path == str(tmp_path / "star_f.fits")


def test_header_card_limit_is_exact(tmp_path):
    """A header of exactly MAX_HEADER_CARDS cards reads; one more is refused
    (by counting, before astropy parses anything)."""
    from hostile_corpus import WCS_CARDS, card, header, pad

    flux = pad((1.0 + np.arange(200) / 200.0).astype(">f4").tobytes())
    fixed = [card("SIMPLE", True), card("BITPIX", -32), card("NAXIS", 1),
             card("NAXIS1", 200), *WCS_CARDS]
    for extra, accepted in ((0, True), (1, False)):
        filler = readers.MAX_HEADER_CARDS - len(fixed) + extra
        path = tmp_path / f"cards_{extra}.fits"
        path.write_bytes(header(*fixed, *(card(f"K{i:07d}", i)
                                          for i in range(filler))) + flux)
        if accepted:
            assert len(read_spectra(path)[0].wavelength) == 200
        else:
            with pytest.raises(ReaderError, match="more than 20,000 cards"):
                read_spectra(path)


def test_threads_reading_hostile_files_leave_warnings_alone(corpus):
    """Reads in threads of one process (the DaCHS server) must restore the
    process-wide warnings state they swap while reading; interleaved, a
    stale recording hook would collect every later warning for ever."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    small = [h.path for h in corpus if h.path.stat().st_size < 2**20]
    hook, filters = warnings.showwarning, list(warnings.filters)

    def read_all(offset):
        outcomes = []
        for path in small[offset:] + small[:offset]:
            try:
                read_spectra(path)
                outcomes.append("accepted")
            except ReaderError:
                outcomes.append("refused")
        return outcomes

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(read_all, range(0, 8 * 7, 7)))
    assert all(outcome == "refused" for result in results for outcome in result)
    assert warnings.showwarning is hook
    assert warnings.filters == filters


# --------------------------------------------------------------------------
# The corpus through the ingest pipeline
# --------------------------------------------------------------------------

def test_pipeline_skips_every_hostile_file_and_keeps_the_good_one(corpus,
                                                                 watchdog):
    directory = corpus[0].path.parent
    good = directory / "good_miles.fits"
    shutil.copy(MILES, good)
    try:
        paths = [str(good)] + [str(h.path) for h in corpus]
        result, seconds, growth = measured(
            process_chunk, paths, str(directory),
            IngestOptions(use_models=False, workers=1, progress=False))
    finally:
        good.unlink()
    assert not isinstance(result, Exception), result
    assert [row["source_file"] for row in result.rows] == ["good_miles.fits"]
    assert result.rows[0]["obs_id"] == "good_miles"
    reasons = dict(result.skipped)
    assert sorted(reasons) == sorted(h.name for h in corpus)
    for hostile in corpus:
        assert re.search(hostile.reason, reasons[hostile.name], re.I), (
            hostile.name, reasons[hostile.name])
    assert seconds < 60
    assert growth < MAX_PEAK_GROWTH


# --------------------------------------------------------------------------
# The corpus against search by example, over HTTP
# --------------------------------------------------------------------------

def _server_memory():
    """(VmRSS, VmHWM) of the DaCHS server in bytes."""
    pid = int(Path("/var/gavo/state/web.pid").read_text())
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
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


@pytest.mark.stack
def test_search_by_example_refuses_every_hostile_upload(base_url, corpus,
                                                        secret, canary,
                                                        watchdog):
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


@pytest.mark.stack
def test_hostile_upload_name_is_escaped(base_url):
    name = '"><script>alert(1)</script>&amp;.fits'
    response = _upload(base_url, name, b"not a spectrum")
    assert response.status_code < 500
    status, message = _query_status(response.content)  # well-formed XML
    # the name arrives (the HTTP client percent-encodes its quote and slash)
    # and is quoted as text, never as markup
    assert status == "ERROR" and "<script>alert(1)" in message
    assert b"<script>" not in response.content


# --------------------------------------------------------------------------
# URL uploads: the server fetches public http(s) addresses only (no SSRF)
# --------------------------------------------------------------------------

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


@pytest.mark.stack
def test_search_by_example_refuses_a_loopback_url_upload(base_url, canary):
    import requests
    response = requests.post(
        base_url + BYEXAMPLE_PATH, timeout=60,
        data={"UPLOAD": f"spectrum,{canary[0]}byexample", "k": "3"})
    status, message = _query_status(response.content)
    assert response.status_code < 500 and status == "ERROR", response.text
    assert "not a public internet address" in message, message
    assert canary[1] == [], "the server fetched a loopback URL"


@pytest.mark.stack
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


# --------------------------------------------------------------------------
# Property-based: the readers
# --------------------------------------------------------------------------

FUZZ = settings(max_examples=500, deadline=timedelta(seconds=MAX_SECONDS),
                database=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


@lru_cache(maxsize=1)
def fuzz_bases():
    """Real files (decompressed) and a small VOTable and CSV to mutate."""
    def raw(path):
        data = Path(path).read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data

    wave = np.linspace(4000.0, 5000.0, 200)
    flux = 1.0 + 0.2 * np.sin(np.arange(200) / 15.0)
    return {
        "miles.fits": raw(MILES),
        "stelib.fits": raw(TEMPLATES / "stelib" / "STELIB_v3.2_HD172167.fits"),
        "xq100.fits": raw(LINETOOLS / "XShooter_XQ100.fits.gz"),
        "xsl.fits": raw(MANGADAP_TESTS / "xsl_spectrum_X0360_uvb.fits"),
        "manga.fits": raw(MANGADAP_TESTS / "MaNGA_test_spectra.fits.gz"),
        "sdss.fits": raw(LINETOOLS / "SDSSJ220248.31+123656.3.fits"),
        "um184.fits": raw(LINETOOLS / "UM184_nF.fits"),
        "sdm.xml": hostile_corpus.votable(
            hostile_corpus.SDM_FIELDS,
            hostile_corpus.sdm_rows(wave, flux)).encode(),
        "table.csv": ("wavelength [Angstrom], flux [erg/s/cm2/Angstrom], error\n"
                      + "".join(f"{w!r}, {f!r}, 0.1\n"
                                for w, f in zip(wave, flux))).encode(),
    }


#: values a mutated header card takes: boundaries, overflow, wrong types
CARD_VALUES = [b"0", b"-1", b"1", b"2", b"3", b"8", b"-32", b"999", b"1000",
               b"2147483648", b"9223372036854775808", b"NaN", b"1E999",
               b"-0.0", b"1e-300", b"T", b"F", b"", b"'abc'", b"'        '",
               b"'1PD(100)'", b"'1000D'", b"'0D'", b"'A'"]


@st.composite
def mutated(draw):
    """(name, bytes) of a real file after 1-4 random mutations."""
    name = draw(st.sampled_from(sorted(fuzz_bases())))
    data = bytearray(fuzz_bases()[name])
    for _ in range(draw(st.integers(1, 4))):
        size = len(data)
        if not size:
            break
        kind = draw(st.sampled_from(["byte", "card", "cut", "insert", "block"]))
        if kind == "byte":  # mostly in the headers, where structure lives
            end = min(size, 2880 * draw(st.integers(1, 20)))
            data[draw(st.integers(0, end - 1))] = draw(st.integers(0, 255))
        elif kind == "card":
            cards = [i for i in range(0, min(size, 60000), 80)
                     if data[i + 8:i + 10] == b"= "]
            if cards:
                i = draw(st.sampled_from(cards))
                value = draw(st.sampled_from(CARD_VALUES))
                data[i + 10:i + 80] = value.rjust(20).ljust(70)
        elif kind == "cut":
            del data[draw(st.integers(0, size - 1)):]
        elif kind == "insert":
            i = draw(st.integers(0, size))
            data[i:i] = draw(st.binary(max_size=200))
        else:  # drop or repeat a FITS block
            i = 2880 * draw(st.integers(0, max(0, size // 2880 - 1)))
            if draw(st.booleans()):
                del data[i:i + 2880]
            else:
                data[i:i] = data[i:i + 2880]
    if draw(st.integers(0, 9)) == 0:
        data = bytearray(gzip.compress(bytes(data), 1))
    return name, bytes(data)


def only_reader_errors(path):
    """Read ``path``; anything but validated spectra or a ReaderError fails."""
    try:
        spectra = read_spectra(path)
    except ReaderError as err:
        assert err.path == str(path)
        return None
    for spectrum in spectra:
        spectrum.validate()
    return spectra


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(case=mutated())
def test_mutated_real_files_raise_only_reader_errors(fuzz_dir, case):
    name, data = case
    path = fuzz_dir / name
    path.write_bytes(data)
    only_reader_errors(path)


@FUZZ
@given(data=st.binary(max_size=6000),
       prefix=st.sampled_from([b"", b"SIMPLE  =", b"SIMPLE  =                    T",
                               b"\x1f\x8b\x08", b"<VOTABLE>",
                               b'<?xml version="1.0"?><VOTABLE',
                               b"wavelength [Angstrom], flux\n"]))
def test_random_bytes_raise_only_reader_errors(fuzz_dir, data, prefix):
    path = fuzz_dir / "random.fits"
    path.write_bytes(prefix + data)
    only_reader_errors(path)


# valid spectra: strictly increasing positive wavelengths, finite flux
finite64 = st.floats(min_value=-1e30, max_value=1e30, allow_nan=False,
                     allow_infinity=False)
finite32 = st.floats(min_value=-2.0**100, max_value=2.0**100, allow_nan=False,
                     allow_infinity=False, width=32)


@st.composite
def valid_arrays(draw, elements=finite64, dtype=np.float64):
    n = draw(st.integers(10, 400))
    start = draw(st.floats(100.0, 1e5))
    steps = draw(arrays(np.float64, n - 1, elements=st.floats(1e-3, 50.0)))
    wave = start + np.concatenate([[0.0], np.cumsum(steps)])
    flux = draw(arrays(dtype, n, elements=elements))
    assume(np.all(np.diff(wave) > 0))
    assume(np.count_nonzero(flux) >= 10)
    return wave, flux


ROUND_TRIP = settings(max_examples=60, deadline=timedelta(seconds=MAX_SECONDS),
                      database=None,
                      suppress_health_check=[HealthCheck.too_slow])


def _read_back(path):
    spectra = read_spectra(path)
    assert len(spectra) == 1
    return spectra[0]


@ROUND_TRIP
@given(arrays_=valid_arrays())
def test_valid_table_round_trips(fuzz_dir, arrays_):
    wave, flux = arrays_
    path = fuzz_dir / "valid_table.fits"
    hostile_corpus.spectrum_table(path, wave, flux)
    spectrum = _read_back(path)
    assert np.array_equal(spectrum.wavelength.value, wave)
    assert np.array_equal(spectrum.flux.value, flux)
    assert np.array_equal(spectrum.mask, flux == 0)


@ROUND_TRIP
@given(arrays_=valid_arrays())
def test_valid_csv_and_votable_round_trip(fuzz_dir, arrays_):
    wave, flux = arrays_
    csv = fuzz_dir / "valid.csv"
    csv.write_text("wavelength [Angstrom], flux [erg/s/cm2/Angstrom]\n" + "".join(
        f"{w!r}, {f!r}\n" for w, f in zip(wave, flux)))
    vot = fuzz_dir / "valid.xml"
    vot.write_text(hostile_corpus.votable(hostile_corpus.SDM_FIELDS,
                                          hostile_corpus.sdm_rows(wave, flux)))
    for path in (csv, vot):
        spectrum = _read_back(path)
        assert np.array_equal(spectrum.wavelength.value, wave), path.name
        assert np.array_equal(spectrum.flux.value, flux), path.name


@ROUND_TRIP
@given(flux=arrays(np.float32, st.integers(10, 400), elements=finite32),
       crval=st.integers(1000, 100_000), cdelt=st.integers(1, 10_000),
       crpix=st.integers(-100, 100))
def test_valid_image_round_trips(fuzz_dir, flux, crval, cdelt, crpix):
    assume(np.count_nonzero(flux) >= 10)
    # decimal header values: what a card holds is exactly what was meant
    crval, cdelt = crval / 10.0, cdelt / 1000.0
    assume(crval + (1 - crpix) * cdelt > 0)
    path = fuzz_dir / "valid_image.fits"
    hdu = fits.PrimaryHDU(flux)
    hdu.header.update(CRVAL1=crval, CDELT1=cdelt, CRPIX1=float(crpix),
                      CTYPE1="WAVE")
    hdu.writeto(path, overwrite=True)
    spectrum = _read_back(path)
    expected = crval + (np.arange(flux.size) + 1.0 - crpix) * cdelt
    assert np.allclose(spectrum.wavelength.value, expected, rtol=1e-12, atol=0)
    assert np.array_equal(spectrum.flux.value, flux.astype(float))
    assert spectrum.medium == "vacuum"


# --------------------------------------------------------------------------
# Property-based: vector literals of the ADQL functions
# --------------------------------------------------------------------------

VECTORS = settings(max_examples=300, deadline=timedelta(seconds=1),
                   database=None)
#: a pgvector literal as vector_sql may write it: numbers only
NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"
STRICT_LITERAL = re.compile(rf"'\[(?:{NUMBER}(?:,{NUMBER})*)?\]'::vector\((\d+)\)")

#: what pgvector stores: finite numbers within float32's range
finite_vectors = st.integers(1, 64).flatmap(
    lambda dim: st.lists(st.floats(min_value=-FLOAT32_MAX,
                                   max_value=FLOAT32_MAX),
                         min_size=dim, max_size=dim))


def _same_floats(a, b):
    """Equal bit for bit (so -0.0 differs from 0.0)."""
    return [struct.pack("<d", x) for x in a] == [struct.pack("<d", x) for x in b]


@VECTORS
@given(text=st.one_of(st.text(max_size=300),
                      st.from_regex(r"\[?[-+0-9eE.,\s nainf]{0,200}\]?",
                                    fullmatch=True)),
       dim=st.integers(1, 64))
def test_any_text_is_a_valid_vector_or_a_vector_literal_error(text, dim):
    try:
        values = parse_vector_literal(text, dim)
    except VectorLiteralError:
        return
    assert len(values) == dim
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)


@VECTORS
@given(values=finite_vectors,
       style=st.sampled_from(["[{}]", "{}", " [ {} ] "]),
       separator=st.sampled_from([",", ", ", " ", "\t", " ,\n"]))
def test_valid_vectors_parse_exactly(values, style, separator):
    text = style.format(separator.join(repr(v) for v in values))
    assert _same_floats(parse_vector_literal(text, len(values)), values)


@VECTORS
@given(values=finite_vectors, bad=st.sampled_from(
           ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "x", "1;",
            "'", "--", "0x10", "1)", "[1]"]),
       data=st.data())
def test_a_bad_element_or_wrong_length_is_refused(values, bad, data):
    position = data.draw(st.integers(0, len(values)))
    broken = [repr(v) for v in values]
    broken.insert(position, bad)
    with pytest.raises(VectorLiteralError):
        parse_vector_literal("[" + ",".join(broken) + "]", len(broken))
    with pytest.raises(VectorLiteralError):
        parse_vector_literal("[" + ",".join(map(repr, values)) + "]",
                             len(values) + 1)


def test_injection_attempts_are_refused():
    for text in ["1); DROP TABLE retrspect.ml_results; --",
                 "[1,2]'::vector(2); SELECT pg_sleep(10); --",
                 "1 2 3' OR '1'='1", "[1,2,3]\0", "x" * 30000]:
        with pytest.raises(VectorLiteralError):
            parse_vector_literal(text, 3)


@VECTORS
@given(values=finite_vectors)
def test_vector_sql_is_a_strict_pgvector_literal(values):
    sql = vector_sql(values, len(values))
    match = STRICT_LITERAL.fullmatch(sql)
    assert match, sql
    assert int(match.group(1)) == len(values)
    inner = sql[sql.index("[") : sql.index("]") + 1]
    assert _same_floats(parse_vector_literal(inner, len(values)), values)


@VECTORS
@given(values=st.lists(st.floats(width=32, allow_nan=False,
                                 allow_infinity=False), min_size=1, max_size=64))
def test_vector_sql_of_float32_arrays(values):
    """Model outputs are float32 numpy arrays (search by example)."""
    latent = np.asarray(values, dtype=np.float32)
    sql = vector_sql(latent, latent.size)
    assert STRICT_LITERAL.fullmatch(sql), sql


@VECTORS
@given(values=finite_vectors, bad=st.sampled_from([math.nan, math.inf,
                                                   -math.inf]),
       data=st.data())
def test_vector_sql_refuses_non_finite_values(values, bad, data):
    values = list(values)
    values.insert(data.draw(st.integers(0, len(values))), bad)
    with pytest.raises(ValueError):
        vector_sql(values, len(values))


def test_values_beyond_float32_are_refused():
    with pytest.raises(VectorLiteralError):
        parse_vector_literal("[1e39, 0, 0]", 3)
