"""Wavelength axes of 1-D images: linear, log-linear, WAVE-LOG, multispec.
"""
import gzip

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits

from retrspect.ingest.bundled import package_dir
from retrspect.ingest.readers import read_spectra

TEMPLATES = package_dir("mangadap") / "data" / "spectral_templates"


LINETOOLS = package_dir("linetools") / "spectra" / "tests" / "files"


def test_log_linear_wcs_matches_linetools_ascii_copy(read_one):
    spectrum = read_one(LINETOOLS / "UM184_nF.fits")
    # linetools ships the same spectrum as text (wave, flux, sigma)
    with gzip.open(LINETOOLS / "UM184.dat.gz", "rt") as stream:
        reference = np.loadtxt(stream)
    assert np.allclose(spectrum.wavelength.value, reference[:, 0], atol=2e-3)
    good = reference[:, 2] > 0
    assert np.allclose(1 / np.sqrt(spectrum.ivar[good]), reference[good, 2], rtol=1e-4)
    assert spectrum.meta["target_name"] == "UM184"


@pytest.mark.parametrize("path", [
    TEMPLATES / "mastarhc_v2" / "MaStarHC_00.fits.gz",
    TEMPLATES / "mastar_ssp_v1.0" / "MaStar-SSP-A00.003-Z+0.00.fits.gz"])
def test_mastar_wave_log_axis_is_log10_angstrom(path):
    """mangadap's MaStar files say CTYPE1 = 'WAVE-LOG' but hold
    log10(lambda / A) in CRVAL1/CDELT1 (3.5589, 1e-4), without CUNIT1."""
    header = fits.getheader(path)
    spectrum = read_spectra(path)[0]
    expected = 10 ** (header["CRVAL1"]
                      + header["CDELT1"] * np.arange(header["NAXIS1"]))
    assert np.allclose(spectrum.wavelength.to_value(u.AA), expected, rtol=1e-12)
    assert 3600 < spectrum.wavelength[0].to_value(u.AA) < 3650
    assert spectrum.wavelength[-1].to_value(u.AA) > 10000


def test_fits_wave_log_axis_with_a_unit_stays_greisen(tmp_path):
    """A WAVE-LOG axis that states its unit is the FITS standard's
    lambda = CRVAL1 * exp(CDELT1 * p / CRVAL1), also below 5 units."""
    npix, crval, cdelt = 500, 4.5e-7, 1e-10
    path = tmp_path / "wavelog.fits"
    hdu = fits.PrimaryHDU(np.ones(npix, np.float32) + 0.01 * np.arange(npix))
    hdu.header.update(CTYPE1="WAVE-LOG", CUNIT1="m", CRVAL1=crval,
                      CDELT1=cdelt, CRPIX1=1.0)
    hdu.writeto(path)
    spectrum = read_spectra(path)[0]
    expected = crval * np.exp(cdelt * np.arange(npix) / crval)
    assert np.allclose(spectrum.wavelength.to_value(u.m), expected, rtol=1e-12)


def test_iraf_multispec_planes(tmp_path, read_one, write_image):
    # apall output: bands spectrum / raw / background / sigma, one aperture,
    # dispersion in WAT2 (linear, 4000 A + 1.5 A per pixel, z = 0).
    n = 200
    flux = 50.0 + np.arange(n) * 0.1
    sigma = np.full(n, 2.0)
    cube = np.stack([flux, flux, np.zeros(n), sigma])[:, np.newaxis, :]
    path = write_image(
        tmp_path / "multispec.fits", cube, CTYPE1="MULTISPE", CTYPE2="MULTISPE",
        WAT0_001="system=multispec",
        WAT1_001="wtype=multispec label=Wavelength units=angstroms",
        WAT2_001='wtype=multispec spec1 = "1 1 0 4000. 1.5 200 0. 10.0 20.0"',
        BANDID1="spectrum - background fit, weights variance, clean no",
        BANDID2="raw - background fit, weights none, clean no",
        BANDID3="background - background fit", BANDID4="sigma - background fit")
    spectrum = read_one(path)
    assert spectrum.wavelength[0].value == 4000.0
    assert spectrum.wavelength[-1].value == pytest.approx(4000.0 + 199 * 1.5)
    assert np.allclose(spectrum.ivar, 0.25)
