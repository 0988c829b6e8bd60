"""The Spectrum type, its checks and the S/N estimate.
"""

import astropy.units as u
import numpy as np
import pytest

from retrspect.ingest.bundled import package_dir
from retrspect.ingest.readers import read_spectra
from retrspect.ingest.errors import ReaderError
from retrspect.ingest.spectrum import Spectrum, empty_meta, estimate_snr

MANGADAP_TESTS = package_dir("mangadap") / "data" / "tests"


def synthetic(noise_sigma, with_ivar, seed=1):
    rng = np.random.default_rng(seed)
    wave = np.linspace(4000.0, 9000.0, 5000)
    continuum = 100.0 * (1 + 0.3 * np.sin(wave / 700.0))  # smooth, varying
    flux = continuum + rng.normal(0.0, noise_sigma, wave.size)
    ivar = np.full(wave.size, noise_sigma**-2.0) if with_ivar else None
    return Spectrum(wave * u.AA, flux * u.dimensionless_unscaled, ivar,
                    np.zeros(wave.size, bool), "vacuum", empty_meta()).validate()


def test_negative_ivar_is_refused():
    spectrum = read_spectra(MANGADAP_TESTS / "MaNGA_test_spectra.fits.gz")[0]
    spectrum.ivar = spectrum.ivar.copy()
    spectrum.ivar[10] = -1.0
    with pytest.raises(ReaderError, match="ivar has negative values"):
        spectrum.validate()


@pytest.mark.parametrize("with_ivar", [True, False], ids=["ivar", "der_snr"])
def test_estimate_snr(with_ivar):
    spectrum = synthetic(5.0, with_ivar)
    expected = np.median(spectrum.flux.value) / 5.0  # about 20
    assert estimate_snr(spectrum) == pytest.approx(expected, rel=0.1)
