"""The bad-pixel rules every layout shares.
"""

import numpy as np


def test_nan_flux(tmp_path, assert_reader_error, write_image):
    path = write_image(tmp_path / "nan.fits", np.full(100, np.nan),
                       CRVAL1=4000.0, CDELT1=1.0, CRPIX1=1)
    assert_reader_error(path, "flux is all NaN")


def test_zero_flux(tmp_path, assert_reader_error, write_image):
    path = write_image(tmp_path / "zero.fits", np.zeros(100),
                       CRVAL1=4000.0, CDELT1=1.0, CRPIX1=1)
    assert_reader_error(path, "flux is all zero")


def test_decreasing_wavelength(tmp_path, assert_reader_error, write_image):
    path = write_image(tmp_path / "reversed.fits", np.ones(100),
                       CRVAL1=5000.0, CDELT1=-1.0, CRPIX1=1)
    assert_reader_error(path, "not strictly increasing")


def test_too_few_good_pixels(tmp_path, assert_reader_error, write_image):
    flux = np.zeros(100)
    flux[:5] = 1.0
    path = write_image(tmp_path / "sparse.fits", flux, CRVAL1=4000.0, CDELT1=1.0)
    assert_reader_error(path, "only 5 good pixels")
