"""Layouts: LAMOST DR5+ tables and DR1-4 images (written from the data model with real flux).
"""

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits

from retrspect.ingest.bundled import package_dir
from retrspect.ingest.readers import read_spectra

TEMPLATES = package_dir("mangadap") / "data" / "spectral_templates"


def stelib_on_lamost_grid():
    """A real STELIB star's flux on LAMOST's log-linear grid (3.5682 + 1e-4 i)."""
    star = read_spectra(TEMPLATES / "stelib" / "STELIB_v3.2_HD002857.fits")[0]
    loglam = 3.5682 + 1e-4 * np.arange(3909)
    flux = np.interp(10**loglam, star.wavelength.value, star.flux.value / 1e-15)
    ivar = np.full(flux.size, 2500.0) / np.maximum(flux, 1e-3) ** 2
    return loglam, flux, ivar


LAMOST_HEADER = dict(TELESCOP="LAMOST", OBSID=101008,
                     DESIG="LAMOST J003154.91-051616.2", OBJNAME="HD2857",
                     RA=7.978792, DEC=-5.271167, CLASS="STAR", SUBCLASS="A2",
                     Z=-0.00048, MJD=56258, VACUUM=True)


def check_lamost(spectrum, loglam, flux):
    assert spectrum.medium == "vacuum"
    assert np.allclose(spectrum.wavelength.value, 10**loglam, rtol=1e-6)
    assert np.allclose(spectrum.flux.value, flux, rtol=1e-6)
    assert spectrum.flux.unit == u.dimensionless_unscaled
    assert np.all(spectrum.mask[200:220])
    meta = spectrum.meta
    assert meta["obs_id"] == "lamost_101008"
    assert meta["target_name"] == "LAMOST J003154.91-051616.2"
    assert (meta["ra"], meta["dec"]) == pytest.approx((7.978792, -5.271167))
    assert meta["object_class"] == "star"
    assert meta["redshift"] == -0.00048
    assert meta["date_obs"] == 56258.0


def test_lamost_dr5_table(tmp_path, read_one):
    loglam, flux, ivar = stelib_on_lamost_grid()
    andmask = np.zeros(flux.size, dtype=np.int32)
    andmask[200:220] = 1
    primary = fits.PrimaryHDU()
    primary.header.update(LAMOST_HEADER)
    primary.header.comments["RA"] = "Right Ascension of object (J2000, deg)"
    n = flux.size
    coadd = fits.BinTableHDU.from_columns([
        fits.Column("FLUX", f"{n}E", array=[flux]),
        fits.Column("IVAR", f"{n}E", array=[ivar]),
        fits.Column("WAVELENGTH", f"{n}E", array=[10**loglam]),
        fits.Column("ANDMASK", f"{n}E", array=[andmask]),
        fits.Column("ORMASK", f"{n}E", array=[andmask]),
    ], name="COADD")
    path = tmp_path / "spec-56258-HD2857_sp01-003.fits.gz"
    fits.HDUList([primary, coadd]).writeto(path)
    check_lamost(read_one(path), loglam, flux)


def test_lamost_dr1_image(tmp_path, read_one):
    loglam, flux, ivar = stelib_on_lamost_grid()
    andmask = np.zeros(flux.size)
    andmask[200:220] = 1
    image = np.vstack([flux, ivar, 10**loglam, andmask, andmask]).astype(np.float32)
    primary = fits.PrimaryHDU(image)
    primary.header.update(LAMOST_HEADER)
    primary.header.update(COEFF0=3.5682, COEFF1=1e-4, CRVAL1=3.5682, CD1_1=1e-4,
                          CRPIX1=1, CTYPE1="LINEAR", **{"DC-FLAG": 1})
    path = tmp_path / "spec-56258-HD2857_sp01-003.fits"
    primary.writeto(path)
    check_lamost(read_one(path), loglam, flux)
