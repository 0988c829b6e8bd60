"""Layouts: SDSS spec-lite (written from the data model with real flux) and plate spectra.
"""

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits

from retrspect.ingest.bundled import package_dir
from retrspect.ingest.readers import read_spectra

MANGADAP_TESTS = package_dir("mangadap") / "data" / "tests"


LINETOOLS = package_dir("linetools") / "spectra" / "tests" / "files"


def manga_spaxel():
    """A real galaxy spectrum on a 1e-4 dex vacuum grid, as BOSS uses."""
    spectra = read_spectra(MANGADAP_TESTS / "MaNGA_test_spectra.fits.gz")
    return spectra[0]


def write_spec_lite(path, spectrum):
    """spec-PLATE-MJD-FIBERID.fits after the SDSS DR17 data model.

    HDU0: header only (PLATEID, MJD, FIBERID, PLUG_RA, PLUG_DEC ...);
    HDU1 COADD: flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model;
    HDU2 SPECOBJ: one row of the spAll/specObj columns;
    HDU3 SPZLINE: emission-line fits.
    """
    n = len(spectrum.wavelength)
    primary = fits.PrimaryHDU()
    primary.header.update(TELESCOP="SDSS 2.5-M", PLATEID=266, MJD=51630,
                          FIBERID=3, PLUG_RA=146.71420, PLUG_DEC=-1.0413043,
                          RADECSYS="FK5", EQUINOX=2000.0)
    and_mask = np.zeros(n, dtype=np.int32)
    and_mask[100:110] = 2 ** 23  # BRIGHTSKY
    coadd = fits.BinTableHDU.from_columns([
        fits.Column("flux", "E", array=spectrum.flux.value),
        fits.Column("loglam", "E", array=np.log10(spectrum.wavelength.value)),
        fits.Column("ivar", "E", array=np.where(spectrum.mask, 0, spectrum.ivar)),
        fits.Column("and_mask", "J", array=and_mask),
        fits.Column("or_mask", "J", array=and_mask),
        fits.Column("wdisp", "E", array=np.full(n, 1.1)),
        fits.Column("sky", "E", array=np.zeros(n)),
        fits.Column("model", "E", array=spectrum.flux.value),
    ], name="COADD")
    specobj = fits.BinTableHDU.from_columns([
        fits.Column("PLATE", "J", array=[266]),
        fits.Column("MJD", "J", array=[51630]),
        fits.Column("FIBERID", "J", array=[3]),
        fits.Column("PLUG_RA", "D", array=[146.71420]),
        fits.Column("PLUG_DEC", "D", array=[-1.0413043]),
        fits.Column("Z", "E", array=[0.0495282]),
        fits.Column("Z_ERR", "E", array=[1e-5]),
        fits.Column("CLASS", "6A", array=["GALAXY"]),
        fits.Column("SUBCLASS", "21A", array=[""]),
        fits.Column("INSTRUMENT", "4A", array=["SDSS"]),
        fits.Column("SPECOBJID", "19A", array=["299489677444933632"]),
        fits.Column("BESTOBJID", "19A", array=["1237648720693755918"]),
    ], name="SPECOBJ")
    spzline = fits.BinTableHDU.from_columns([
        fits.Column("LINENAME", "13A", array=["H_alpha"]),
        fits.Column("LINEWAVE", "D", array=[6564.61]),
    ], name="SPZLINE")
    fits.HDUList([primary, coadd, specobj, spzline]).writeto(path)


def test_linetools_sdss_plate_spectrum(read_one, separation_arcsec):
    spectrum = read_one(LINETOOLS / "SDSSJ220248.31+123656.3.fits")
    assert len(spectrum.wavelength) == 4646
    assert spectrum.wavelength[0].value == pytest.approx(10 ** 3.5507)
    assert spectrum.medium == "vacuum"
    assert spectrum.flux.unit == u.Unit("1e-17 erg / (s cm2 Angstrom)")
    assert spectrum.meta["date_obs"] == 55831.0
    # The header RA/DEC is the plate boresight; the position is the J-name's.
    assert separation_arcsec(spectrum.meta, 330.701292, 12.615639) < 0.1
    assert spectrum.meta["object_class"] == "qso"


def test_sdss_spec_lite(tmp_path, read_one):
    spaxel = manga_spaxel()
    path = tmp_path / "spec-0266-51630-0003.fits"
    write_spec_lite(path, spaxel)
    spectrum = read_one(path)
    assert spectrum.medium == "vacuum"
    assert np.allclose(spectrum.wavelength.value, spaxel.wavelength.value, rtol=1e-6)
    assert np.allclose(spectrum.flux.value, spaxel.flux.value)
    assert spectrum.flux.unit == u.Unit("1e-17 erg / (s cm2 Angstrom)")
    assert np.all(spectrum.mask[100:110])  # and_mask set
    meta = spectrum.meta
    assert meta["obs_id"] == "sdss_0266_51630_0003"
    assert (meta["ra"], meta["dec"]) == (146.71420, -1.0413043)
    assert meta["target_name"] == "SDSS J094651.40-010228.6"
    assert meta["redshift"] == pytest.approx(0.0495282)
    assert meta["object_class"] == "galaxy"
    assert meta["date_obs"] == 51630.0
    # wdisp 1.1 pixels of 1e-4 dex: R = 1 / (ln 10 * 1e-4 * 1.1 * 2.3548)
    assert meta["resolving_power"] == pytest.approx(1676.6, abs=0.5)
