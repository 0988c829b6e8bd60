"""Shared fixtures of the ingest tests: reading one file, writing a 1-D
image, asserting a reader's refusal, angular separations."""

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits

from retrspect.ingest.bundled import enrich
from retrspect.ingest.readers import read_spectra
from retrspect.ingest.errors import ReaderError


def _read_one(path):
    """Read a single-spectrum file and enrich it like ingest does."""
    spectra = read_spectra(path)
    assert len(spectra) == 1
    return enrich(spectra[0])


def _separation_arcsec(meta, ra, dec):
    """Angle between a spectrum's position and (ra, dec), in arcsec."""
    here = SkyCoord(meta["ra"] * u.deg, meta["dec"] * u.deg)
    return here.separation(SkyCoord(ra * u.deg, dec * u.deg)).arcsec


def _write_image(path, flux, **cards):
    hdu = fits.PrimaryHDU(np.asarray(flux, dtype=np.float32))
    hdu.header.update(cards)
    hdu.writeto(path)
    return path


def _assert_reader_error(path, phrase):
    with pytest.raises(ReaderError) as caught:
        read_spectra(path)
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert phrase in caught.value.reason
    return caught.value


@pytest.fixture
def read_one():
    """``read_one(path)``: the one spectrum of a file, enriched as ingest does."""
    return _read_one


@pytest.fixture
def separation_arcsec():
    """``separation_arcsec(meta, ra, dec)``: angle to a position, arcsec."""
    return _separation_arcsec


@pytest.fixture
def write_image():
    """``write_image(path, flux, **cards)``: a 1-D FITS image."""
    return _write_image


@pytest.fixture
def assert_reader_error():
    """``assert_reader_error(path, phrase)``: the file is refused, naming
    itself, with ``phrase`` in the reason."""
    return _assert_reader_error


@pytest.fixture(scope="session")
def stelib_files():
    """Twelve bundled STELIB files (paths as text)."""
    from retrspect.ingest.bundled import bundled_sources
    return [str(s.path) for s in bundled_sources()
            if s.collection == "STELIB"][:12]
