"""Synthetic quasar and galaxy material (retrspect.models.synthetic).
"""

import numpy as np
import pytest

from retrspect.models import synthetic


def test_forest_matches_the_observed_mean_transmission():
    rng = np.random.default_rng(3)
    wave = synthetic.fine_wavelength(900, 1300)
    z = 3.5
    sel = (wave > 1040) & (wave < 1185)
    target = np.mean(np.exp(-0.0018 * (wave[sel] * (1 + z) / 1215.67) ** 3.92))
    tau = np.zeros_like(wave)
    for centre in np.linspace(1040, 1185, 300):
        synthetic._add_tau(tau, wave, centre, 0.5, 30.0)
    scaled = np.exp(-synthetic.forest_scale(wave, tau, z) * tau)
    assert np.mean(scaled[sel]) == pytest.approx(target, abs=1e-3)
    assert np.mean(np.exp(-tau[sel])) > target + 0.05     # unscaled was too thin


@pytest.mark.parametrize("kind", synthetic.OUT_OF_DOMAIN_KINDS)
def test_out_of_domain_spectra_cover_the_grid_and_are_not_stars(kind):
    """Each kind covers the whole model grid with finite flux and errors,
    and has the feature that makes it out of domain."""
    from retrspect.ingest.preprocess import MODEL_GRID, prepare
    s = synthetic.out_of_domain(np.random.default_rng(4), kind)
    flux, weight = prepare(s, MODEL_GRID)
    assert (weight > 0).mean() > 0.99 and np.isfinite(s.flux.value).all()
    f = s.flux.value
    jump = np.abs(np.diff(f)).max() / np.median(np.abs(f))
    if kind == "step":
        assert jump > 0.5
    if kind == "fringes":
        spectrum = np.abs(np.fft.rfft(f - f.mean()))
        assert spectrum[20:].max() > 5 * np.median(spectrum[20:])  # one strong period
    if kind == "line_forest":
        assert (f > 1.5).sum() > 100
    with pytest.raises(ValueError, match="unknown"):
        synthetic.out_of_domain(np.random.default_rng(4), "galaxy")
