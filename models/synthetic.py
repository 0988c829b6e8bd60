"""Galaxy and quasar training material: physics, not real spectra.

:func:`ssp_library` reads the stellar population models shipped with
sdss-mangadap; :func:`synthetic_galaxy` and :func:`synthetic_qso` build
galaxy- and quasar-like rest-frame spectra from them and from published line
ratios (emission lines, the Lyman-alpha forest, metal absorbers);
:func:`emission_star` adds H-alpha emission to a real star.

Nothing here imports torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import astropy.units as u
import numpy as np

from retrspect.ingest.preprocess import (
    C_KMS,
    air_to_vacuum,
)

#: Stellar-population libraries used as galaxy material: name, directory
#: under mangadap's spectral_templates, wavelength medium of the library.
SSP_LIBRARIES = (
    ("bc03", "bc03_mpajhu", "air"),
    ("miuscat", "miuscat_thin", "air"),
    ("m11_miles", "m11_miles", "air"),
    ("m11_stelib", "m11_stelib_zsol", "air"),
    ("bpass", "bpass", "air"),
)

#: Libraries of sdss-mangadap that are *made from MILES stars* (averages,
#: clusters): never used, they would leak test stars into training.
LEAKY_LIBRARIES = ("miles_avg", "miles_thin", "miles_cluster", "mileshc_v2")


# --------------------------------------------------------------------------
# Galaxy and quasar material
# --------------------------------------------------------------------------

#: A fine rest-frame log-lambda grid for synthetic spectra (vacuum A).
FINE_LOGLAM_STEP = 2.0e-5          # 13.8 km/s


def fine_wavelength(start, stop):
    """Vacuum wavelengths on the fine synthetic grid from start to stop A."""
    n = int(math.log10(stop / start) / FINE_LOGLAM_STEP) + 1
    return 10.0 ** (math.log10(start) + FINE_LOGLAM_STEP * np.arange(n))


@dataclass
class Template:
    """A rest-frame model spectrum on the fine grid (vacuum A)."""

    name: str
    wave: np.ndarray
    flux: np.ndarray
    good: np.ndarray
    continuum: np.ndarray | None = None

    def normalised(self):
        """(wave, flux / continuum, good): the spectrum as a pipeline that
        fits the unabsorbed continuum (over emission lines, above the
        Ly-alpha forest) would ship it; the template itself without one."""
        if self.continuum is None:
            return self.wave, self.flux, self.good
        return self.wave, self.flux / self.continuum, self.good


@lru_cache(maxsize=1)
def ssp_library():
    """Stellar-population spectra from sdss-mangadap, on the fine grid.

    Returns
    -------
    list of Template
        Each in vacuum wavelengths, flux normalised to median 1, good where
        the model is defined.  The libraries in :data:`LEAKY_LIBRARIES`
        (built from MILES stars) are never read.
    """
    from retrspect.ingest.bundled import package_dir
    from retrspect.ingest.readers import read_spectra
    root = package_dir("mangadap") / "data" / "spectral_templates"
    out = []
    for name, directory, medium in SSP_LIBRARIES:
        for path in sorted((root / directory).glob("*.fits*")):
            spectrum = read_spectra(path)[0]
            wave = spectrum.wavelength.to_value(u.AA)
            if medium == "air":
                wave = air_to_vacuum(wave * u.AA).value
            flux = np.asarray(spectrum.flux.value, dtype=np.float64)
            good = spectrum.good & (flux > 0)
            fine = fine_wavelength(max(wave[0], 2000.0), min(wave[-1], 11000.0))
            ok = np.interp(fine, wave, good.astype(float)) > 0.99
            values = np.interp(fine, wave[good], flux[good])
            scale = np.median(values[ok])
            out.append(Template(f"{name}:{Path(path).name}", fine,
                                values / scale, ok))
    return out


#: Quasar emission lines (rest vacuum A, flux relative to Ly-alpha = 100,
#: FWHM km/s), after the SDSS composite of Vanden Berk et al. (2001, AJ 122,
#: 549), table 2, rounded.
QSO_LINES = (
    (1033.8, 9.0, 6000), (1215.7, 100.0, 4500), (1240.1, 25.0, 4000),
    (1305.5, 2.0, 3000), (1335.3, 1.0, 3000), (1398.0, 8.0, 5000),
    (1549.1, 25.0, 4500), (1640.4, 2.0, 4000), (1908.7, 16.0, 5000),
    (2326.0, 1.5, 4000), (2798.8, 14.0, 4500), (3426.8, 0.5, 1000),
    (3728.5, 0.6, 800), (3869.8, 1.3, 1000), (4102.9, 1.0, 3000),
    (4341.7, 2.6, 3000), (4862.7, 8.6, 4000), (4960.3, 1.0, 800),
    (5008.2, 3.5, 800), (5877.3, 1.0, 3000), (6564.6, 31.0, 3500),
)

#: Galaxy emission lines: rest vacuum A and the family that sets its ratio.
GALAXY_LINES = (
    (3727.1, "oii", 0.5), (3729.9, "oii", 0.5), (3869.9, "neiii", 1.0),
    (4102.9, "balmer", 0.26), (4341.7, "balmer", 0.47), (4862.7, "balmer", 1.0),
    (4960.3, "oiii", 0.33), (5008.2, "oiii", 1.0), (5877.3, "hei", 1.0),
    (6302.0, "oi", 1.0), (6549.9, "nii", 0.34), (6564.6, "halpha", 1.0),
    (6585.3, "nii", 1.0), (6718.3, "sii", 0.55), (6732.7, "sii", 0.45),
)


def _gaussian_lines(wave, lines, rng=None):
    """Sum of Gaussian lines: (centre A, area, FWHM km/s) tuples."""
    out = np.zeros_like(wave)
    for centre, area, fwhm in lines:
        sigma = centre * fwhm / C_KMS / 2.3548
        sel = np.abs(wave - centre) < 6 * sigma
        if np.any(sel):
            out[sel] += area / (sigma * math.sqrt(2 * math.pi)) * np.exp(
                -0.5 * ((wave[sel] - centre) / sigma) ** 2)
    return out


def synthetic_qso(rng, z, ssps=None):
    """A synthetic quasar at redshift z, rest frame, on the fine grid.

    Power-law continuum (f_lambda ~ lambda^alpha, alpha ~ -1.5 +- 0.4), the
    broad and narrow lines of :data:`QSO_LINES` with random strengths and
    widths (one width factor per quasar for the broad lines, log-normal
    with 0.35 dex spread and a floor of 1500 km/s - narrow-line Seyfert 1s
    to very broad lines - times a per-line jitter), intervening absorbers
    (:func:`absorption_systems`: the Ly-alpha forest, sometimes a damped
    system, metal lines), and little flux below the Lyman limit.  With
    ``ssps`` and z < 0.8, half the quasars carry host-galaxy starlight
    (10-60% of the flux at 5100 A rest), as low-redshift AGN spectra
    through a fibre do.  ``continuum`` holds the unabsorbed spectrum.

    Returns
    -------
    Template
    """
    lo = max(600.0, 3000.0 / (1 + z))
    hi = min(11000.0 / (1 + z) + 50, 11000.0)
    wave = fine_wavelength(lo, max(hi, lo * 1.5))
    alpha = rng.normal(-1.5, 0.4)
    continuum = (wave / 3000.0) ** alpha
    lya_continuum = (1215.7 / 3000.0) ** alpha
    # Line areas relative to Ly-alpha; Ly-alpha's EW ~ 90 A rest.
    ew_scale = 90.0 * lya_continuum * rng.lognormal(0, 0.4)
    lines = []
    width = 10 ** rng.normal(0.0, 0.35)
    for centre, strength, fwhm in QSO_LINES:
        area = ew_scale * strength / 100.0 * rng.lognormal(0, 0.35)
        broad = fwhm > 1500
        lines.append((centre * (1 + rng.normal(0, 0.0007)), area,
                      max(fwhm * (width if broad else 1.0), 1500.0 if broad else 0.0)
                      * rng.uniform(0.8, 1.25)))
    flux = continuum + _gaussian_lines(wave, lines)
    if ssps is not None and z < 0.8 and rng.random() < 0.5:
        host = synthetic_galaxy(rng, ssps, emission=False)
        starlight = np.interp(wave, host.wave, host.flux)
        here = float(np.interp(5100.0, wave, flux))
        frac = rng.uniform(0.1, 0.6)
        flux = flux + starlight / max(float(np.interp(5100.0, host.wave, host.flux)), 1e-6) \
            * here * frac / (1 - frac)
    unabsorbed = flux.copy()
    flux = flux * absorption_systems(rng, wave, z)
    flux[wave < 912.0] *= rng.uniform(0.0, 0.3)
    scale = np.median(flux)
    return Template(f"qso_z{z:.3f}", wave, flux / scale, np.ones(wave.size, bool),
                    continuum=unabsorbed / scale)


#: Intervening absorption lines: rest vacuum A and oscillator strength
#: (Morton 2003), for the metal systems redward of Ly-alpha.
METAL_LINES = ((1334.5, 0.128), (1393.8, 0.513), (1402.8, 0.255), (1548.2, 0.190),
               (1550.8, 0.095), (2344.2, 0.114), (2382.8, 0.320), (2600.2, 0.239),
               (2796.4, 0.616), (2803.5, 0.306))


def _add_tau(tau, wave, centre, tau0, b_kms):
    """Add a Gaussian optical-depth profile (Doppler parameter b) to tau."""
    half = centre * 6 * b_kms / C_KMS
    lo, hi = np.searchsorted(wave, [centre - half, centre + half])
    if hi > lo:
        v = (wave[lo:hi] / centre - 1.0) * C_KMS
        tau[lo:hi] += tau0 * np.exp(-(v / b_kms) ** 2)


def forest_scale(wave, tau, z, lo=1040.0, hi=1185.0):
    """Factor on the forest's optical depth that gives the observed mean
    transmission between Ly-beta and Ly-alpha: exp(-tau_eff) with tau_eff =
    0.0018 (1 + z_abs)^3.92 (Faucher-Giguere et al. 2008, ApJ 681, 831),
    the usual mean-flux calibration of mock forests.  1 without coverage."""
    sel = (wave > lo) & (wave < hi)
    if sel.sum() < 10 or not np.any(tau[sel] > 0):
        return 1.0
    z_abs = wave[sel] * (1 + z) / 1215.67 - 1
    target = float(np.mean(np.exp(-0.0018 * (1 + z_abs) ** 3.92)))
    low, high = 0.2, 30.0
    for _ in range(40):
        mid = math.sqrt(low * high)
        if np.mean(np.exp(-mid * tau[sel])) > target:
            low = mid
        else:
            high = mid
    return math.sqrt(low * high)


def absorption_systems(rng, wave, z):
    """Transmission exp(-tau) of intervening gas in front of a quasar at z.

    Rest-frame wavelengths of the quasar.  Ly-alpha forest clouds (dN/dz =
    100 ((1+z)/3)^2.5 above 10^13 cm^-2, column densities from f(N) ~
    N^-1.5 up to 10^17, b 20-40 km/s, each with its Ly-beta; optical depths
    scaled to the observed mean transmission, :func:`forest_scale`), a damped
    Ly-alpha system with probability 0.3 (log N 20.3-21.3, Lorentzian wings),
    and 3-12 metal absorbers (C IV, Si IV, Mg II, Fe II, C II) at random
    redshifts below the quasar's.
    """
    forest = np.zeros_like(wave)
    tau = forest
    z_lo = max(0.0, 1026.0 * (1 + z) / 1215.67 - 1) if z > 0 else 0.0
    z_lo = min(z_lo, z)
    span = z - z_lo
    if span > 0:
        rate = 100.0 * ((1 + z) / 3.0) ** 2.5
        # forest lines over Ly-beta..Ly-alpha and below (Ly-beta of others)
        z_min = max(0.0, 912.0 * (1 + z) / 1215.67 - 1)
        n_lines = rng.poisson(rate * (z - z_min))
        z_abs = rng.uniform(z_min, z, n_lines)
        u = rng.random(n_lines)
        log_n = 13.0 - np.log10(1 - u * (1 - 10 ** (-0.5 * 4.0))) / 0.5   # N^-1.5, 13..17
        b = rng.uniform(20.0, 40.0, n_lines)
        for za, ln, bb in zip(z_abs, log_n, b):
            tau0 = 7.58e-13 * 10 ** ln / bb
            for rest, scale in ((1215.67, 1.0), (1025.72, 0.16)):
                _add_tau(forest, wave, rest * (1 + za) / (1 + z), tau0 * scale, bb)
        tau = forest * forest_scale(wave, forest, z)
        if rng.random() < 0.3:
            za = rng.uniform(max(z_min, z_lo), z)
            centre = 1215.67 * (1 + za) / (1 + z)
            column = 10 ** rng.uniform(20.3, 21.3)
            tau += column / 2e20 * (5.0 / np.maximum(np.abs(wave - centre), 0.05)) ** 2
    for _ in range(rng.integers(3, 13)):
        za = rng.uniform(0.0, z)
        strength = 10 ** rng.uniform(-0.5, 1.0)
        bb = rng.uniform(10.0, 60.0)
        for rest, f in METAL_LINES:
            if rng.random() < 0.6:
                _add_tau(tau, wave, rest * (1 + za) / (1 + z), strength * f / 0.3, bb)
    return np.exp(-np.minimum(tau, 50.0))


def _broaden(wave, flux, sigma_kms):
    """Gaussian broadening on the fine log grid (sigma in km/s)."""
    step_kms = C_KMS * math.log(10) * FINE_LOGLAM_STEP
    sigma = sigma_kms / step_kms
    if sigma < 0.3:
        return flux
    half = int(4 * sigma) + 1
    taps = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    # pad with the end values: zero padding would draw a false absorption
    # edge at both ends of the model
    return np.convolve(np.pad(flux, half, mode="edge"), taps / taps.sum(), "valid")


def synthetic_galaxy(rng, ssps=None, *, emission=None, second_component=True):
    """A galaxy-like rest-frame spectrum from stellar-population models.

    One to three SSPs with random weights, dust reddening (a power-law
    tilt), velocity dispersion 40-300 km/s, and with probability 0.6 (or
    ``emission``) nebular lines of a star-forming or AGN-like ratio set,
    with ``second_component`` sometimes with a second kinematic component.

    Returns
    -------
    Template
    """
    ssps = ssp_library() if ssps is None else ssps
    picks = rng.choice(len(ssps), size=rng.integers(1, 4), replace=False)
    lo = max(ssps[i].wave[0] for i in picks)
    hi = min(ssps[i].wave[-1] for i in picks)
    wave = fine_wavelength(lo, hi)
    weights = rng.dirichlet(np.ones(len(picks)))
    flux = np.zeros_like(wave)
    good = np.ones(wave.size, bool)
    for w, i in zip(weights, picks):
        flux += w * np.interp(wave, ssps[i].wave, ssps[i].flux)
        good &= np.interp(wave, ssps[i].wave, ssps[i].good.astype(float)) > 0.99
    flux *= (wave / 5500.0) ** (-rng.exponential(0.6))
    flux = _broaden(wave, flux, rng.uniform(40, 300))
    flux /= np.median(flux[good])
    if emission is None:
        emission = rng.random() < 0.6
    if emission:
        agn = rng.random() < 0.25
        ratios = {
            "balmer": 1.0, "halpha": rng.uniform(2.86, 5.0),
            "oiii": rng.uniform(3, 12) if agn else 10 ** rng.uniform(-0.7, 0.5),
            "nii": rng.uniform(0.6, 2.0) if agn else 10 ** rng.uniform(-1.3, -0.3),
            "oii": rng.uniform(1, 4), "neiii": rng.uniform(0.05, 0.4),
            "hei": rng.uniform(0.05, 0.15), "oi": rng.uniform(0.02, 0.3),
            "sii": rng.uniform(0.2, 0.8),
        }
        # Normalise to an H-alpha equivalent width 1-200 A (log-uniform).
        continuum_ha = float(np.interp(6564.6, wave, flux))
        ha_area = 10 ** rng.uniform(0, 2.3) * continuum_ha
        hb_area = ha_area / ratios["halpha"]
        fwhm = rng.uniform(80, 450) * (2.0 if agn else 1.0)
        # a second kinematic component (outflow, a merger's other disc)
        # with probability 0.4: offset -400..+200 km/s, 1.3-4x broader,
        # 10-60% of each line's flux
        second = None
        if second_component and rng.random() < 0.4:
            second = (rng.uniform(-400, 200), rng.uniform(1.3, 4.0), rng.uniform(0.1, 0.6))
        lines = []
        for centre, family, within in GALAXY_LINES:
            rel = ratios[family] * within
            if family == "nii":
                rel *= ratios["halpha"]
            if family == "halpha":
                rel = ratios["halpha"]
            if second is None:
                lines.append((centre, hb_area * rel, fwhm))
            else:
                dv, broader, share = second
                lines.append((centre, hb_area * rel * (1 - share), fwhm))
                lines.append((centre * (1 + dv / C_KMS), hb_area * rel * share,
                              fwhm * broader))
        flux = flux + _gaussian_lines(wave, lines)
    return Template("galaxy", wave, flux, good)


def emission_star(rng, item):
    """A star with Be-star or dMe-like Balmer emission added (rest frame).

    H-alpha with equivalent width 2-40 A, single or double peaked (peak
    separation 80-400 km/s), FWHM 60-400 km/s; H-beta and H-gamma at
    decrement-like fractions.

    Returns
    -------
    Template
    """
    wave, flux, good = item.wave, item.flux, item.good
    continuum = np.median(flux[good & (wave > 6450) & (wave < 6680)]) if np.any(
        good & (wave > 6450) & (wave < 6680)) else np.median(flux[good])
    ew = 10 ** rng.uniform(math.log10(2), math.log10(40))
    fwhm = rng.uniform(60, 400)
    split = rng.uniform(80, 400) if rng.random() < 0.5 else 0.0
    lines = []
    for centre, frac in ((6564.6, 1.0), (4862.7, rng.uniform(0.15, 0.45)),
                         (4341.7, rng.uniform(0.05, 0.2))):
        area = ew * frac * continuum
        for sign in ((-1, 1) if split else (0,)):
            lines.append((centre * (1 + sign * split / 2 / C_KMS),
                          area / (2 if split else 1), fwhm))
    return Template("emission_star", wave, flux + _gaussian_lines(wave, lines), good)



# --------------------------------------------------------------------------
# Out-of-domain spectra (for the unknown-class rule)
# --------------------------------------------------------------------------

#: What an archive holds that none of the models learned: strong CCD
#: fringing, a broken flux calibration (large random wiggles), an unphysical
#: forest of strong emission lines, a stitching step between two arms.  (A
#: dead fibre, noise only, is not among them: it is consistent with any
#: spectrum at its S/N, so no reconstruction error can single it out; its
#: class probabilities say it through their entropy.)
OUT_OF_DOMAIN_KINDS = ("fringes", "wiggles", "line_forest", "step")


def out_of_domain(rng, kind, *, lo=3600.0, hi=7400.0, step=1.2):
    """A synthetic observed spectrum of ``kind`` (:data:`OUT_OF_DOMAIN_KINDS`)
    covering ``lo``-``hi`` vacuum A on a linear grid, with errors.

    Returns
    -------
    retrspect.ingest.spectrum.Spectrum
    """
    from astropy import units as u

    from retrspect.ingest.spectrum import Spectrum, empty_meta
    wave = np.arange(lo, hi, step)
    x = (wave - lo) / (hi - lo)
    sigma = 0.02
    if kind == "fringes":
        period = rng.uniform(15.0, 60.0)
        flux = (1.0 + 0.3 * (x - 0.5)) * (1 + 0.3 * np.sin(2 * np.pi * wave / period
                                                           + rng.uniform(0, 2 * np.pi)))
    elif kind == "wiggles":
        k = np.arange(1, 13)
        phases = rng.uniform(0, 2 * np.pi, k.size)
        amps = rng.uniform(0.2, 0.6, k.size) / np.sqrt(k)
        flux = 1.5 + (amps[:, None] * np.sin(2 * np.pi * k[:, None] * x + phases[:, None])).sum(0)
    elif kind == "line_forest":
        centres = rng.uniform(lo, hi, 60)
        flux = 1.0 + _gaussian_lines(wave, [(c, rng.uniform(5, 60), rng.uniform(150, 600))
                                            for c in centres])
    elif kind == "step":
        edge = rng.uniform(0.3, 0.7)
        flux = np.where(x < edge, 1.0, rng.choice([0.25, 4.0])) * (1 + 0.3 * (x - 0.5))
    else:
        raise ValueError(f"unknown out-of-domain kind {kind!r}")
    flux = np.clip(flux, 1e-3, None)
    flux = flux + sigma * np.abs(flux).mean() * rng.standard_normal(wave.size)
    ivar = np.full(wave.size, 1.0 / (sigma * np.abs(flux).mean()) ** 2)
    return Spectrum(wavelength=wave * u.AA, flux=flux * u.dimensionless_unscaled, ivar=ivar,
                    mask=np.zeros(wave.size, bool), medium="vacuum", meta=empty_meta(),
                    source=f"synthetic {kind}")
