"""Training and evaluation material: real spectra, labels, splits, augmentation.

Everything the models learn from or are judged on comes from here:

* :func:`load_catalogue` reads every bundled spectrum (``ingest.bundled``)
  and labels it: star identity (MILES and STELIB spectra of one star share
  it), main spectral class, emission-line flag, Teff / log g / [Fe/H];
* :func:`assign_splits` puts each *star* (not each file) into train,
  validation or test, stratified by class; galaxies and QSOs (real ones) are
  test only;
* :func:`ssp_library` and :func:`synthetic_qso` give galaxy- and
  quasar-like training material (stellar population models shipped with
  sdss-mangadap; a quasar composite built from published line ratios);
* :func:`observe` turns a rest-frame spectrum into what an archive would
  hold (shift, blur, sampling, medium, coverage, calibration tilt, noise,
  bad pixels) and hands it to :func:`ingest.preprocess.prepare` - the very
  function ingest runs.

Nothing here imports torch.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import astropy.units as u
import numpy as np

from ingest import preprocess
from ingest.preprocess import (
    C_KMS,
    MODEL_GRID,
    air_to_vacuum,
    vacuum_to_air,
    vacuum_wavelength,
)
from ingest.spectrum import Spectrum, empty_meta

#: Class names, in the order of the classifier's outputs.
CLASSES = ("O", "B", "A", "F", "G", "K", "M", "emission_line_star", "galaxy", "qso")
STAR_CLASSES = CLASSES[:7]

#: Fractions of stars held out (stratified by class).
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1

#: A star whose H-alpha (6555-6575 A vacuum) rises above the local
#: continuum by more than this equivalent width (A) is an emission-line star.
EMISSION_EW = 1.0

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
# Real spectra and their labels
# --------------------------------------------------------------------------

@dataclass
class Item:
    """One real spectrum with what the models are judged on.

    Attributes
    ----------
    spectrum : Spectrum
    kind : {"star", "galaxy", "qso"}
    star_id : str
        Identity for splitting: one value per physical object.
    label : str or None
        Class name (one of :data:`CLASSES`), None when unknown.
    teff, logg, feh : float or None
    halpha_ew : float or None
        Net H-alpha emission equivalent width in A (positive = emission).
    split : {"train", "val", "test"}
    wave, flux, good : ndarray
        Vacuum wavelength (A), flux and good-pixel mask, for augmentation.
    """

    spectrum: Spectrum
    kind: str
    star_id: str
    label: str | None
    teff: float | None = None
    logg: float | None = None
    feh: float | None = None
    halpha_ew: float | None = None
    split: str = "test"
    wave: np.ndarray = field(default=None, repr=False)
    flux: np.ndarray = field(default=None, repr=False)
    good: np.ndarray = field(default=None, repr=False)

    @property
    def collection(self):
        return self.spectrum.meta["collection"]

    @property
    def obs_id(self):
        return self.spectrum.meta["obs_id"]


def star_identity(name: str | None, fallback: str) -> str:
    """A normalised star name, so MILES and STELIB spellings of one star agree.

    ``HD002857``, ``HD 2857`` and ``hd2857`` all become ``HD2857``.

    Parameters
    ----------
    name : str or None
    fallback : str
        Used when there is no name (the spectrum's obs_id).

    Returns
    -------
    str
    """
    if not name:
        return fallback
    text = re.sub(r"\s+", "", name.upper())
    match = re.match(r"^(HD|HR|HIP|BD|CD|G|GL|GJ|LTT|FEIGE)([+-]?)0*(\d+)(.*)$", text)
    if match:
        return "".join(match.groups())
    return text


def main_class(mk_type: str | None) -> str | None:
    """The main spectral class (O..M) of an MK type, None if it has none.

    Subdwarf prefixes are dropped (``sdF5`` -> F); Wolf-Rayet, white dwarf,
    carbon and S stars, evolutionary stages in place of a type (GB, AGB, HB
    for MILES's cluster stars) and empty types give None.
    """
    if not mk_type:
        return None
    text = mk_type.strip()
    # The MILES catalogue gives evolutionary stages, not MK types, for its
    # globular- and open-cluster stars: GB (giant branch), AGB, HB.
    if re.match(r"^(A?GB|RGB|[BER]?HB|SGB)\b", text):
        return None
    text = re.sub(r"^sd:?", "", text)
    if text and text[0] in "OBAFGKM":
        return text[0]
    return None


def subclass(mk_type):
    """The numeric MK subclass (G8 III -> 8.0), None when there is none."""
    match = re.match(r"^(?:sd:?)?[OBAFGKM](\d(?:\.\d)?)", (mk_type or "").strip())
    return float(match.group(1)) if match else None


#: Lowest Teff (K) of each main class on the dwarf scale of Pecaut &
#: Mamajek (2013): the Teff of its X0 V subclass (B0 V for O/B).
TEFF_CLASS_EDGES = (("O", 31400.0), ("B", 9700.0), ("A", 7220.0), ("F", 5930.0),
                    ("G", 5270.0), ("K", 3850.0), ("M", 0.0))


def teff_class(teff):
    """The main class (O..M) a Teff falls in on the dwarf scale, None without Teff."""
    if not teff:
        return None
    return next(c for c, lo in TEFF_CLASS_EDGES if teff >= lo)


def label_consistent(item, tolerance=1):
    """False when a star's catalogue class and catalogue Teff disagree by
    more than ``tolerance`` classes (a 'B5' with Teff 6200 K): one of the
    two catalogue values is wrong, so the star neither trains nor scores
    in the label-quality figure.  True when either is missing.  The dwarf
    scale makes giants look up to a class cooler; one class of slack covers it."""
    order = "OBAFGKM"
    if item.label not in order:
        return True
    by_teff = teff_class(item.teff)
    if by_teff is None:
        return True
    return abs(order.index(by_teff) - order.index(item.label)) <= tolerance


def ordinal_target(item, width=1.0):
    """Soft class target on the O..M continuum from the MK subclass.

    The star sits at x = class index + (subclass + 0.5) / 10; each class
    k gets max(0, 1 - |x - (k + 0.5)| / width), normalised.  A G8 gives
    G 0.65 / K 0.35, a G5 G 0.95 / K 0.05: the label says how close to a
    boundary the star is, which a one-hot label hides.  One-hot for stars
    without a subclass and for the non-MK classes.
    """
    target = np.zeros(len(CLASSES), np.float32)
    order = "OBAFGKM"
    sub = subclass(item.spectrum.meta["mk_type"]) if item.label in order else None
    if sub is None:
        target[CLASSES.index(item.label)] = 1.0
        return target
    x = order.index(item.label) + (min(sub, 9.5) + 0.5) / 10.0
    for k in range(len(order)):
        target[k] = max(0.0, 1.0 - abs(x - (k + 0.5)) / width)
    return target / target.sum()


#: Standardisation of the stellar parameters for auxiliary heads:
#: (log10 Teff, log g, [Fe/H]) - mean, / scale (rough library spreads).
PARAM_SHIFT = np.array([3.75, 3.4, -0.3], np.float32)
PARAM_SCALE = np.array([0.15, 1.2, 0.5], np.float32)


def standard_parameters(item):
    """(values, mask) of standardised log Teff, log g, [Fe/H] (0 where unknown)."""
    raw = [math.log10(item.teff) if item.teff else None, item.logg, item.feh]
    mask = np.array([v is not None and np.isfinite(v) for v in raw], np.float32)
    values = np.array([v if m else 0.0 for v, m in zip(raw, mask)], np.float32)
    return np.where(mask > 0, (values - PARAM_SHIFT) / PARAM_SCALE, 0.0).astype(np.float32), mask


def halpha_emission(wave, flux, good):
    """Net H-alpha equivalent width (A, positive = emission above continuum).

    The continuum is the mean of the medians in 6500-6540 and 6590-6630 A
    (vacuum); the line window is 6555-6575 A.  None without coverage.
    """
    def window_median(lo, hi):
        sel = good & (wave > lo) & (wave < hi)
        return float(np.median(flux[sel])) if sel.sum() > 3 else float("nan")

    continuum = 0.5 * (window_median(6500, 6540) + window_median(6590, 6630))
    sel = good & (wave > 6555) & (wave < 6575)
    if sel.sum() < 3 or not continuum > 0:
        return None
    return float(np.trapz(flux[sel] / continuum - 1.0, wave[sel]))


def label_item(spectrum: Spectrum) -> Item:
    """Label one real spectrum (see :class:`Item`)."""
    meta = spectrum.meta
    wave = vacuum_wavelength(spectrum).value
    flux = np.asarray(spectrum.flux.value, dtype=np.float64)
    good = spectrum.good
    kind = meta["object_class"] or "star"
    if kind == "star":
        ew = halpha_emission(wave, flux, good)
        mk = meta["mk_type"] or ""
        if mk.startswith("W") or (ew is not None and ew > EMISSION_EW):
            label = "emission_line_star"
        else:
            label = main_class(mk)
        star_id = star_identity(meta["target_name"], meta["obs_id"])
    else:
        ew = None
        label = kind
        # MaNGA spaxels of one galaxy share its systemic redshift.
        star_id = (f"{meta['collection']}_z{meta['redshift']:.4f}"
                   if meta["redshift"] is not None else meta["obs_id"])
    return Item(spectrum=spectrum, kind=kind, star_id=star_id, label=label,
                teff=meta["teff"], logg=meta["logg"], feh=meta["feh"],
                halpha_ew=ew, wave=wave, flux=flux, good=good)


def load_catalogue(sources=None, *, progress=False):
    """Read and label every bundled spectrum.

    Parameters
    ----------
    sources : list of BundledSource, optional
        Defaults to :func:`ingest.bundled.bundled_sources`.
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of Item
        With splits assigned (:func:`assign_splits`).
    """
    from ingest.bundled import bundled_sources
    sources = bundled_sources() if sources is None else sources
    if progress:
        from tqdm import tqdm
        sources = tqdm(sources, desc="reading bundled spectra", unit="file",
                       leave=False)
    items = [label_item(spectrum) for source in sources
             for spectrum in source.read()]
    assign_splits(items)
    return items


def _rank(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def assign_splits(items, *, test=TEST_FRACTION, val=VAL_FRACTION):
    """Split stars (not files) into train/val/test, stratified by class.

    All spectra of one star (same :attr:`Item.star_id`) get the same split,
    so a star's MILES and STELIB spectra never straddle train and test.
    Within each class, stars are ordered by a hash of their identity and
    every fifth goes to test, the next tenth to validation.  Galaxies and
    QSOs are all test.

    Parameters
    ----------
    items : list of Item
        Updated in place.
    """
    stars = {}
    for item in items:
        if item.kind != "star":
            item.split = "test"
            continue
        stars.setdefault(item.star_id, []).append(item)
    by_class = {}
    for star_id, group in stars.items():
        labels = [i.label for i in group if i.label]
        # a star with an emission-line spectrum counts as one, so the rare
        # class is stratified too
        key = ("emission_line_star" if "emission_line_star" in labels
               else (labels[0] if labels else "none"))
        by_class.setdefault(key, []).append(star_id)
    for key, ids in by_class.items():
        ids.sort(key=_rank)
        for n, star_id in enumerate(ids):
            phase = n % 10
            if phase < round(10 * test):
                split = "test"
            elif phase < round(10 * (test + val)):
                split = "val"
            else:
                split = "train"
            for item in stars[star_id]:
                item.split = split
    return items


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
    from ingest.bundled import package_dir
    from ingest.readers import read_spectra
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


#: Night-sky emission lines (vacuum A) and their strength relative to
#: [O I] 5577: [O I] 5577, Na D, [O I] 6300, 6364, the OH bands near 6865 and 7280-7340.
SKY_RESIDUAL_LINES = ((5578.9, 1.0), (5891.6, 0.4), (5897.6, 0.3), (6302.0, 0.6),
                      (6365.5, 0.25), (6865.8, 0.3), (7278.4, 0.25), (7318.3, 0.3),
                      (7343.0, 0.3))


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


def rest_frame(item: Item):
    """Rest-frame (wave, flux, good, native resolving power) of a real star."""
    return item.wave, item.flux, item.good, item.spectrum.meta["resolving_power"]


def velocity_to_z(v_kms):
    """Relativistic Doppler redshift of a radial velocity in km/s."""
    beta = np.asarray(v_kms, dtype=np.float64) / C_KMS
    return np.sqrt((1 + beta) / (1 - beta)) - 1


def z_to_velocity(z):
    """Inverse of :func:`velocity_to_z`."""
    z = np.asarray(z, dtype=np.float64)
    ratio = (1 + z) ** 2
    return C_KMS * (ratio - 1) / (ratio + 1)
