"""Real training material: the bundled spectra, their labels and splits.

* :func:`load_catalogue` reads every bundled spectrum
  (``retrspect.ingest.bundled``) and labels it: star identity (MILES and
  STELIB spectra of one star share it), main spectral class, emission-line
  flag, Teff / log g / [Fe/H];
* :func:`assign_splits` puts each *star* (not each file) into train,
  validation or test, stratified by class; galaxies and QSOs (real ones) are
  test only.

Nothing here imports torch.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field

import numpy as np

from retrspect.ingest.preprocess import (
    vacuum_wavelength,
)
from retrspect.ingest.spectrum import Spectrum

#: Class names, in the order of the classifier's outputs.
CLASSES = ("O", "B", "A", "F", "G", "K", "M", "emission_line_star", "galaxy", "qso")
STAR_CLASSES = CLASSES[:7]
#: class name -> output index
CLASS_INDEX = {name: n for n, name in enumerate(CLASSES)}

#: Fractions of stars held out (stratified by class).
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1

#: A star whose H-alpha (6555-6575 A vacuum) rises above the local
#: continuum by more than this equivalent width (A) is an emission-line star.
EMISSION_EW = 1.0


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
    from retrspect.ingest.bundled import bundled_sources
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



def rest_frame(item: Item):
    """Rest-frame (wave, flux, good, native resolving power) of a real star."""
    return item.wave, item.flux, item.good, item.spectrum.meta["resolving_power"]


