"""Hostile input (issue 6, item 4): broken and malicious spectrum files are
refused with a clear reason by the readers, in bounded time and memory,
reading nothing outside the file.

The corpus is written at test time by :mod:`hostile_corpus` (nothing large
is committed); each file carries the reason its refusal must give.  Peak
memory is read from ``/proc/self/status`` (VmHWM, reset per file through
``/proc/self/clear_refs``), so a reader that loaded a bomb into memory
fails here even if it refused the file afterwards.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis.configuration import set_hypothesis_home_dir

import hostile_corpus
from retrspect.ingest.readers import safety as readers
from retrspect.ingest.readers import read_spectra
from retrspect.ingest.errors import ReaderError

set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "retrspect-hypothesis"))

#: per-file bounds for refusing a hostile file
MAX_SECONDS = 5.0


#: peak resident memory a refusal may add.  Reading the 200 MB image or
#: any bomb would add far more; the largest refusal here (a gzipped VOTable
#: read up to the 32 MiB text limit) adds about 20 MB.
MAX_PEAK_GROWTH = 64 * 2**20


def test_corpus_is_large_and_varied(corpus):
    assert len(corpus) >= 30
    suffixes = {h.name.split(".", 1)[1] for h in corpus}
    assert {"fits", "fits.gz", "xml", "xml.gz", "csv"} <= suffixes


def test_every_hostile_file_is_refused_for_its_reason(corpus, secret, canary,
                                                      watchdog, assert_no_leak, measured):
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


def test_gzip_bomb_costs_bounded_work(corpus, measured):
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
