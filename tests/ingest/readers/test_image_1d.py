"""Layouts: 1-D FITS images and flux/error file pairs.
"""

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits

from retrspect.ingest.bundled import package_dir
from retrspect.ingest.readers import read_spectra
from retrspect.ingest.errors import ReaderError

LINETOOLS = package_dir("linetools") / "spectra" / "tests" / "files"


def test_split_flux_and_error_files(read_one, separation_arcsec):
    spectrum = read_one(LINETOOLS / "PH957_f.fits")
    assert spectrum.ivar is not None
    error = fits.getdata(LINETOOLS / "PH957_e.fits").astype(float)
    good = error > 0
    assert np.allclose(spectrum.ivar[good], 1 / error[good] ** 2)
    assert np.all(spectrum.mask[~good])
    # DC-FLAG = 1: CRVAL1 = 3.58109715864 is log10 of the first wavelength
    assert spectrum.wavelength[0].value == pytest.approx(10 ** 3.58109715864)
    # PHL 957, SIMBAD ICRS 01 03 11.27 +13 16 17.7 (header: B1950 FK4 strings)
    assert separation_arcsec(spectrum.meta, 15.796958, 13.271583) < 60
    assert spectrum.flux.unit == u.dimensionless_unscaled  # continuum-normalised
    with pytest.raises(ReaderError, match="error array of PH957_f.fits"):
        read_spectra(LINETOOLS / "PH957_e.fits")


def test_image_without_wavelength(tmp_path, assert_reader_error, write_image):
    path = write_image(tmp_path / "nowcs.fits", np.ones(100), CDELT1=1.0)
    assert_reader_error(path, "no wavelength information")


def test_single_row_image(tmp_path, read_one, write_image):
    flux = 1.0 + 0.1 * np.sin(np.arange(300) / 10.0)
    path = write_image(tmp_path / "row.fits", flux[np.newaxis, :], CRVAL1=5000.0,
                       CDELT1=0.5, CRPIX1=1, CTYPE1="AWAV", CUNIT1="Angstrom")
    spectrum = read_one(path)
    assert spectrum.wavelength[-1].value == pytest.approx(5000.0 + 299 * 0.5)
    assert spectrum.medium == "air"
    assert np.allclose(spectrum.flux.value, flux, rtol=1e-6)
