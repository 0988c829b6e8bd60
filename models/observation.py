"""The observation simulator: from a rest-frame spectrum to what an archive
holds.

:func:`observe` applies a random :class:`Observation` (shift, blur,
sampling, medium, coverage, calibration tilt, noise, bad pixels, sky
residuals) and returns a :class:`~retrspect.ingest.spectrum.Spectrum`; the
training pipeline puts it on the grid with
:func:`retrspect.ingest.preprocess.prepare`, the very function ingest runs.

Nothing here imports torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import astropy.units as u
import numpy as np

from retrspect.ingest import preprocess
from retrspect.ingest.preprocess import (
    C_KMS,
    MODEL_GRID,
    vacuum_to_air,
)
from retrspect.ingest.spectrum import Spectrum, empty_meta

# --------------------------------------------------------------------------
# Observation: from a rest-frame spectrum to what an archive holds
# --------------------------------------------------------------------------

@dataclass
class Observation:
    """Settings of one simulated observation (see :func:`observe`)."""

    z: float = 0.0
    resolving_power: float | None = None
    snr: float | None = None
    errors: bool = True
    tilt: tuple = (0.0, 0.0)
    medium: str = "vacuum"
    resample: float | None = None
    cut: tuple = (None, None)
    gaps: tuple = ()
    cosmics: int = 0
    flatten: float | None = None
    sky: float = 0.0


def random_observation(rng, *, z=0.0, strength=1.0, native_r=None, snr_range=(5.0, 300.0)):
    """Random :class:`Observation` settings that mirror real archives.

    Parameters
    ----------
    rng : numpy.random.Generator
    z : float
        Redshift to apply (velocity or cosmological).
    strength : float
        Scales the probability and size of the nuisances (0 = clean).
    native_r : float, optional
        The source's resolving power (no blur to a higher one).
    snr_range : (float, float)
        S/N per native pixel, drawn log-uniformly.
    """
    obs = Observation(z=z)
    if rng.random() < 0.4 * strength:
        top = min(native_r or 2500.0, 2500.0)
        obs.resolving_power = float(rng.uniform(900.0, max(top, 1000.0)))
    if rng.random() < 0.9 * min(1.0, strength * 1.5):
        obs.snr = float(10 ** rng.uniform(*np.log10(snr_range)))
    obs.errors = bool(rng.random() < 0.7)
    obs.tilt = (float(rng.normal(0, 0.35 * strength)), float(rng.normal(0, 0.6 * strength)))
    obs.medium = "air" if rng.random() < 0.5 else "vacuum"
    if rng.random() < 0.5 * strength:
        obs.resample = float(rng.uniform(0.4, 2.5))
    if rng.random() < 0.3 * strength:
        lo = float(rng.uniform(3600, 4600)) if rng.random() < 0.6 else None
        hi = float(rng.uniform(6000, 7400)) if rng.random() < 0.6 else None
        obs.cut = (lo, hi)
    if rng.random() < 0.2 * strength:
        obs.gaps = tuple((float(rng.uniform(3600, 7400)), float(rng.uniform(5, 60)))
                         for _ in range(rng.integers(1, 4)))
    if rng.random() < 0.3 * strength:
        obs.cosmics = int(rng.integers(1, 6))
    if rng.random() < 0.12 * strength:
        # a continuum-normalised product (echelle pipelines, UVES/ESI/MagE)
        obs.flatten = float(rng.uniform(80.0, 250.0))
    if rng.random() < 0.3 * strength:
        # night-sky line residuals, in units of the noise
        obs.sky = float(10 ** rng.uniform(0.3, 1.6))
    return obs


def _blur_native(wave, flux, r_from, r_to):
    """Blur a spectrum from resolving power r_from to r_to (approximately,
    with one kernel in pixels computed at the central wavelength)."""
    if not r_to or (r_from and r_to >= r_from):
        return flux
    centre = 0.5 * (wave[0] + wave[-1])
    fwhm = centre * math.sqrt(max(r_to ** -2 - (r_from or 1e9) ** -2, 0.0))
    sigma_pix = fwhm / 2.3548 / float(np.median(np.diff(wave)))
    if sigma_pix < 0.3:
        return flux
    half = int(4 * sigma_pix) + 1
    taps = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_pix) ** 2)
    taps /= taps.sum()
    padded = np.pad(flux, half, mode="edge")
    return np.convolve(padded, taps, "valid")


def running_median(wave, flux, good, width):
    """A running median of the good pixels over ``width`` A (a crude
    continuum, as a normalising pipeline would divide by)."""
    step = float(np.median(np.diff(wave)))
    block = max(2, int(width / step / 3))
    filled = np.interp(wave, wave[good], flux[good]) if np.any(good) else flux
    n = filled.size // block
    if n < 3:
        return np.full_like(filled, np.median(filled))
    # medians of blocks of a third of the width, a running median of three
    # of them, interpolated back: a running median at a fraction of the cost
    medians = np.median(filled[: n * block].reshape(n, block), axis=1)
    centres = wave[: n * block].reshape(n, block).mean(axis=1)
    padded = np.concatenate([medians[:1], medians, medians[-1:]])
    smooth = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    cont = np.interp(wave, centres, smooth)
    level = np.median(np.abs(cont)) if np.any(cont) else 1.0
    return np.where(np.abs(cont) > 1e-3 * level, cont, 1e-3 * level)


#: The [O I] night-sky lines 5577, 6300 and 6364 (vacuum A) with their
#: strength relative to 5577: the strongest residuals, which the velocity
#: model masks (``retrspect.models.velocity.SKY_LINES``).
OI_SKY_LINES = ((5578.9, 1.0), (6302.0, 0.6), (6365.5, 0.25))
#: All night-sky lines whose residuals augmentation adds (vacuum A, strength
#: relative to [O I] 5577): [O I], Na D and the OH bands near 6865 and
#: 7280-7340, in wavelength order.
SKY_RESIDUAL_LINES = (OI_SKY_LINES[0], (5891.6, 0.4), (5897.6, 0.3),
                      *OI_SKY_LINES[1:], (6865.8, 0.3), (7278.4, 0.25),
                      (7318.3, 0.3), (7343.0, 0.3))


def cutout_window(rng, grid, fractions):
    """A random (lo, hi) window, in observed vacuum Angstrom, covering a
    fraction drawn from ``fractions`` of ``grid`` (in log-lambda) at a random
    place: what a SODA cutout of a spectrum leaves on the grid."""
    lo, hi = math.log(grid.wavelength[0]), math.log(grid.wavelength[-1])
    width = (hi - lo) * float(rng.uniform(*fractions))
    start = lo + float(rng.uniform(0.0, hi - lo - width))
    return (math.exp(start), math.exp(start + width))


def sky_residuals(wave, amplitude, rng):
    """Residuals of imperfect sky subtraction at the night-sky lines (observed
    vacuum A): peak ``amplitude`` (times each line's strength) with a random
    sign (over-subtraction too), about one resolution element wide."""
    out = np.zeros_like(wave)
    sigma = max(float(np.median(np.diff(wave))), 1.0)
    for centre, strength in SKY_RESIDUAL_LINES:
        if wave[0] < centre < wave[-1]:
            sign = 1.0 if rng.random() < 0.7 else -1.0
            sel = np.abs(wave - centre) < 5 * sigma
            out[sel] += sign * amplitude * strength * rng.uniform(0.3, 1.0) * np.exp(
                -0.5 * ((wave[sel] - centre) / sigma) ** 2)
    return out


def observe(wave, flux, good, obs: Observation, rng, *, native_r=None,
            meta=None) -> Spectrum:
    """Turn a rest-frame spectrum into an archive-like :class:`Spectrum`.

    Parameters
    ----------
    wave : ndarray
        Rest-frame vacuum wavelengths (A), increasing.
    flux : ndarray
    good : ndarray of bool
    obs : Observation
    rng : numpy.random.Generator
    native_r : float, optional
        Resolving power of the input.
    meta : dict, optional
        Extra standard metadata.

    Returns
    -------
    Spectrum
        Not validated (training builds many; prepare copes with anything).
    """
    wave = np.asarray(wave, dtype=np.float64) * (1.0 + obs.z)
    flux = np.asarray(flux, dtype=np.float64)
    good = np.asarray(good, dtype=bool).copy()
    resolving_power = native_r
    if obs.resolving_power:
        flux = _blur_native(wave, flux, native_r, obs.resolving_power)
        resolving_power = obs.resolving_power
    if obs.resample:
        start = max(wave[0], 3000.0)
        stop = min(wave[-1], 11000.0)
        if stop > start + 10 * obs.resample:
            new = np.arange(start, stop, obs.resample)
            good = np.interp(new, wave, good.astype(float)) > 0.999
            flux = np.interp(new, wave, flux)
            wave = new
    keep = np.ones(wave.size, bool)
    lo, hi = obs.cut
    if lo is not None:
        keep &= wave >= lo
    if hi is not None:
        keep &= wave <= hi
    if keep.sum() < 50:
        keep[:] = True
    wave, flux, good = wave[keep], flux[keep], good[keep]
    for centre, width in obs.gaps:
        good &= np.abs(wave - centre) > width / 2
    x = np.log(wave / 5500.0)
    flux = flux * np.exp(obs.tilt[0] * x + obs.tilt[1] * x * x)
    if obs.flatten:
        flux = flux / running_median(wave, flux, good, obs.flatten)
    ivar = None
    if obs.snr:
        level = float(np.median(np.abs(flux[good]))) if np.any(good) else 1.0
        sigma0 = level / obs.snr
        # a mix of sky-like (constant) and photon-like (sqrt flux) noise
        mix = rng.uniform(0, 1)
        var = sigma0 ** 2 * (mix + (1 - mix) * np.clip(np.abs(flux) / level, 0.05, 20))
        flux = flux + rng.normal(0.0, 1.0, flux.size) * np.sqrt(var)
        if obs.errors:
            ivar = np.where(good, 1.0 / var, 0.0)
        if obs.sky:
            flux = flux + sky_residuals(wave, obs.sky * sigma0, rng)
    if obs.cosmics:
        hits = rng.integers(0, flux.size, obs.cosmics)
        level = float(np.median(np.abs(flux[good]))) if np.any(good) else 1.0
        flux[hits] += level * rng.uniform(1, 20, hits.size)
    if obs.medium == "air":
        wave = vacuum_to_air(wave * u.AA).value
    full_meta = empty_meta(resolving_power=resolving_power)
    if meta:
        full_meta.update(meta)
    return Spectrum(wavelength=wave * u.AA, flux=flux * u.dimensionless_unscaled,
                    ivar=ivar, mask=~good, medium=obs.medium, meta=full_meta,
                    source="augmented")


def prepare_observed(spectrum, grid=MODEL_GRID):
    """The training pipeline's only way onto the grid: ingest's prepare."""
    return preprocess.prepare(spectrum, grid)


def velocity_to_z(v_kms):
    """Relativistic Doppler redshift of a radial velocity in km/s."""
    beta = np.asarray(v_kms, dtype=np.float64) / C_KMS
    return np.sqrt((1 + beta) / (1 - beta)) - 1


def z_to_velocity(z):
    """Inverse of :func:`velocity_to_z`."""
    z = np.asarray(z, dtype=np.float64)
    ratio = (1 + z) ** 2
    return C_KMS * (ratio - 1) / (ratio + 1)

