"""Property-based tests of the readers: mutated real files and random bytes
raise only ReaderError; valid arrays round-trip through every writable layout.
"""
from __future__ import annotations

import gzip
import tempfile
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.extra.numpy import arrays

import hostile_corpus
from retrspect.ingest.bundled import package_dir
from retrspect.ingest.readers import read_spectra
from retrspect.ingest.errors import ReaderError

set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "retrspect-hypothesis"))

TEMPLATES = package_dir("mangadap") / "data" / "spectral_templates"


MANGADAP_TESTS = package_dir("mangadap") / "data" / "tests"


LINETOOLS = package_dir("linetools") / "spectra" / "tests" / "files"


MILES = TEMPLATES / "miles" / "MILES_res2.50_star_m0028V.fits"


#: per-file bounds for refusing a hostile file
MAX_SECONDS = 5.0


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
