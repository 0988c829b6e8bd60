"""Layout: the MaNGA spaxel test spectra.
"""

import astropy.units as u
import pytest

from retrspect.ingest.bundled import enrich, package_dir
from retrspect.ingest.readers import read_spectra

MANGADAP_TESTS = package_dir("mangadap") / "data" / "tests"


def test_manga_spaxels_and_redshifts():
    path = MANGADAP_TESTS / "MaNGA_test_spectra.fits.gz"
    spectra = [enrich(s) for s in read_spectra(path)]
    # Row 5 is flagged DONOTUSE on every pixel and is left out.
    assert [s.index for s in spectra] == [0, 1, 2, 3, 4, 6, 7]
    assert [s.meta["redshift"] for s in spectra] == pytest.approx(
        [0.0495282, 0.050231, 0.04935, 0.027447, 0.030805, 0.0171611, 0.0181699])
    assert all(s.meta["object_class"] == "galaxy" for s in spectra)
    assert all(s.medium == "vacuum" and len(s.wavelength) == 4563 for s in spectra)
    assert spectra[0].flux.unit == u.Unit("1e-17 erg / (s cm2 Angstrom)")
    assert spectra[0].meta["obs_id"] == "manga_test_spectra_0"
    # SRES at the pixel nearest the middle of 3621.6-10353.8 A (6987.7 A)
    assert spectra[0].meta["resolving_power"] == pytest.approx(2038.83, abs=0.01)
    multicomp = read_spectra(MANGADAP_TESTS / "MaNGA_multicomp_test_spectra.fits.gz")
    assert [s.meta["redshift"] for s in multicomp] == pytest.approx(
        [0.0312591, 0.134659, 0.0236603])
