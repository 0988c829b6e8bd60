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
