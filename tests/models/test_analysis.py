"""Latent analysis: mutual information and information per dimension (retrspect.models.analysis).
"""
import math

import numpy as np
import pytest

from retrspect.models import analysis as A


@pytest.mark.parametrize("rho", [0.0, 0.6, 0.9])
def test_ksg_recovers_gaussian_mutual_information(rho):
    rng = np.random.default_rng(1)
    x = rng.normal(size=2000)
    y = rho * x + math.sqrt(1 - rho ** 2) * rng.normal(size=2000)
    truth = -0.5 * math.log2(1 - rho ** 2)
    assert A.mi_ksg(x, y) == pytest.approx(truth, abs=0.05)
    # monotonic maps do not change MI
    assert A.mi_ksg(np.exp(x), y ** 3) == pytest.approx(truth, abs=0.05)


def test_histogram_mi_is_close_for_a_strong_dependence():
    rng = np.random.default_rng(2)
    x = rng.normal(size=5000)
    y = 0.9 * x + math.sqrt(1 - 0.81) * rng.normal(size=5000)
    # 10 x 10 bins lose some information: biased low, but not by much
    assert A.mi_histogram(x, y) == pytest.approx(-0.5 * math.log2(1 - 0.81), abs=0.35)


def test_latent_information_of_a_known_gaussian_channel():
    # z = mu(x) + sigma eps with mu ~ N(0, s^2): I(x; z) = 1/2 log2(1 + s^2 / sigma^2)
    rng = np.random.default_rng(3)
    n = 1500
    mean = np.column_stack([rng.normal(0, 3.0, n), rng.normal(0, 0.05, n)])
    logvar = np.log(np.full((n, 2), 1.0))
    info = A.latent_information(mean, logvar, rng=rng)
    assert info[0] == pytest.approx(0.5 * math.log2(1 + 9.0), abs=0.15)
    assert info[1] < 0.02
    mad, informative = A.mad_rule(mean)
    assert informative.tolist() == [True, True]
    mad, informative = A.mad_rule(np.column_stack([mean[:, 0], 0.001 * mean[:, 1]]))
    assert informative.tolist() == [True, False]
