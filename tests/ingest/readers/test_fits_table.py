"""Layout: FITS binary tables (ESO Phase 3, XSL, SDM in FITS).
"""

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits

from retrspect.ingest.bundled import package_dir
from retrspect.ingest.spectrum import estimate_snr

MANGADAP_TESTS = package_dir("mangadap") / "data" / "tests"


LINETOOLS = package_dir("linetools") / "spectra" / "tests" / "files"


def test_xq100_phase3_table_in_angstrom(read_one, separation_arcsec):
    spectrum = read_one(LINETOOLS / "XShooter_XQ100.fits.gz")
    assert spectrum.wavelength.unit == u.AA
    assert len(spectrum.wavelength) == 9771
    # TDMIN1/TDMAX1 = 981.7513 / 1823.4998 nm
    assert spectrum.wavelength[0].value == pytest.approx(9817.513, abs=1e-2)
    assert spectrum.wavelength[-1].value == pytest.approx(18234.998, abs=1e-2)
    assert spectrum.flux.unit == u.erg / (u.s * u.cm**2 * u.nm)
    assert spectrum.ivar is not None and spectrum.medium == "vacuum"
    assert spectrum.meta["target_name"] == "BR J2349-3712"
    assert spectrum.meta["resolving_power"] == 5300.0
    assert spectrum.meta["date_obs"] == pytest.approx(56215.01080095)
    assert separation_arcsec(spectrum.meta, 357.306532, -37.21662) < 1
    # the pipeline's own figure: SNR = 21.67 (average per pixel)
    assert estimate_snr(spectrum) == pytest.approx(21.67, rel=0.1)


def test_xsl_table_of_scalar_rows(read_one):
    spectrum = read_one(MANGADAP_TESTS / "xsl_spectrum_X0360_uvb.fits")
    assert len(spectrum.wavelength) == 17140
    assert spectrum.wavelength[0].value == pytest.approx(2989.044, abs=1e-2)
    assert spectrum.medium == "air"
    assert spectrum.meta["target_name"] == "BD+012916"
    assert spectrum.meta["resolving_power"] == pytest.approx(9994.64, abs=0.01)
    assert spectrum.meta["obs_id"] == "xsl_x0360_uvb"


def test_sdm_fits_resolution_from_spec_res_and_spec_val(tmp_path, read_one):
    """DaCHS's SDM FITS: SPEC_RES is a resolution and SPEC_VAL the centre,
    both in metres; ESO's SPEC_RES (a resolving power) is unaffected."""
    wave = np.linspace(4000.0, 6000.0, 500)
    columns = [fits.Column(name="spectral", format="D", array=wave,
                           unit="Angstrom"),
               fits.Column(name="flux", format="D", array=np.ones(500) + wave
                           * 1e-4),
               fits.Column(name="flux_error", format="D",
                           array=np.full(500, np.nan))]
    table = fits.BinTableHDU.from_columns(columns)
    table.header.update({"TUTYP1": "spec:spectrum.data.spectralaxis.value",
                         "TUTYP2": "spec:spectrum.data.fluxaxis.value",
                         "TUTYP3": "spec:spectrum.data.fluxaxis.accuracy."
                                   "staterror",
                         "SPEC_VAL": 5.0e-7, "SPEC_RES": 2.5e-10,
                         "VOCLASS": "Spectrum-1.0"})
    path = tmp_path / "sdm.fits"
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    spectrum = read_one(path)
    assert spectrum.meta["resolving_power"] == pytest.approx(2000.0)
    assert spectrum.good.sum() == 500 and spectrum.ivar is None


def test_table_with_mismatched_lengths(tmp_path, assert_reader_error):
    table = fits.BinTableHDU.from_columns([
        fits.Column("WAVE", "100E", unit="nm", array=[np.linspace(400, 500, 100)]),
        fits.Column("FLUX", "90E", array=[np.ones(90)]),
    ], name="SPECTRUM")
    path = tmp_path / "mismatch.fits"
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    assert_reader_error(path, "array lengths differ: wavelength 100, flux 90")
