"""Statistics of a latent space's vectors, shared by the model cards
(training side) and the explorer (runtime), so both rank a space's
dimensions with one estimator."""
from __future__ import annotations

import math

import numpy as np


def latent_information(mean, logvar, *, samples=4, rng=None, max_points=2000):
    """I(x; z_d) in bits for each latent dimension (Monte Carlo).

    ``I = E_x E_{z ~ q(z|x)} [log q(z|x) - log q(z)]`` with the aggregate
    posterior ``q(z) = mean_n N(z; mu_n, sigma_n^2)``, per dimension.
    Bounded above by log2(N) for N spectra.

    Parameters
    ----------
    mean, logvar : ndarray (n, d)

    Returns
    -------
    ndarray (d,)
    """
    rng = np.random.default_rng(0) if rng is None else rng
    mean = np.asarray(mean, dtype=np.float64)
    logvar = np.asarray(logvar, dtype=np.float64)
    if len(mean) > max_points:
        keep = rng.choice(len(mean), max_points, replace=False)
        mean, logvar = mean[keep], logvar[keep]
    n, d = mean.shape
    sigma = np.exp(0.5 * logvar)
    out = np.zeros(d)
    for j in range(d):
        z = mean[:, j, None] + sigma[:, j, None] * rng.normal(size=(n, samples))
        # log q(z | x_n) for the z drawn from x_n
        own = -0.5 * ((z - mean[:, j, None]) / sigma[:, j, None]) ** 2 - np.log(
            sigma[:, j, None]) - 0.5 * math.log(2 * math.pi)
        # log q(z) = logsumexp over all n' of N(z; mu_n', sigma_n') - log n
        zz = z.reshape(-1)[:, None]
        comp = -0.5 * ((zz - mean[None, :, j]) / sigma[None, :, j]) ** 2 - np.log(
            sigma[None, :, j]) - 0.5 * math.log(2 * math.pi)
        top = comp.max(1, keepdims=True)
        agg = (top[:, 0] + np.log(np.exp(comp - top).sum(1)) - math.log(n)).reshape(n, samples)
        out[j] = float(np.mean(own - agg)) / math.log(2)
    return np.clip(out, 0.0, None)
