"""The in-memory spectrum every reader returns, its checks, and a S/N estimate.

Every reader in :mod:`ingest.readers` produces :class:`Spectrum` objects and
calls :meth:`Spectrum.validate` before handing them on, so code downstream
(pre-processing, the embedding model, the database loader) can rely on one set
of guarantees instead of re-checking each file format's quirks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np

from retrspect.ingest.errors import ReaderError

__all__ = [
    "MIN_GOOD_PIXELS",
    "META_KEYS",
    "Spectrum",
    "estimate_snr",
]

#: Fewer usable pixels than this and a spectrum carries no shape to learn from.
MIN_GOOD_PIXELS = 10

#: The standard metadata keys; every reader fills all of them (None = unknown).
META_KEYS = (
    "obs_id",
    "target_name",
    "ra",
    "dec",
    "date_obs",
    "collection",
    "object_class",
    "instrument",
    "resolving_power",
    "redshift",
    "teff",
    "logg",
    "feh",
    "mk_type",
    "rv",
)

_MEDIA = ("air", "vacuum")


def empty_meta(**values):
    """Return a metadata dict with every standard key, unknown ones None.

    Parameters
    ----------
    **values
        Known values; keys must be standard keys.

    Returns
    -------
    dict
        All of :data:`META_KEYS`, so consumers never need ``dict.get``.

    Raises
    ------
    KeyError
        For a key that is not standard: a typo would otherwise silently
        create a field no consumer reads.
    """
    unknown = set(values) - set(META_KEYS)
    if unknown:
        raise KeyError(f"not standard metadata keys: {sorted(unknown)}")
    meta = dict.fromkeys(META_KEYS)
    meta.update(values)
    return meta


@dataclass
class Spectrum:
    """One 1-D spectrum as a file gives it, with a bad-pixel mask.

    Attributes
    ----------
    wavelength : Quantity, shape (N,)
        Length unit, strictly increasing, in the file's medium (no air/vacuum
        conversion, no resampling).
    flux : Quantity, shape (N,)
        Flux density; ``u.dimensionless_unscaled`` when the file holds
        relative or normalised flux.
    ivar : ndarray, shape (N,), or None
        Inverse variance in ``flux.unit**-2``; 0 where the error is unknown;
        None when the file has no error at all.
    mask : ndarray of bool, shape (N,)
        True marks a bad pixel: NaN, zero-filled gap, zero inverse variance or
        a pixel flagged by the file.
    medium : {"air", "vacuum"}
        The medium the wavelengths are given in, as the file or its format
        documentation says.
    meta : dict
        The keys of :data:`META_KEYS`, None when unknown.
    source : str
        Path of the file the spectrum came from.
    index : int
        Position of the spectrum in that file (0 for single-spectrum files).
    """

    wavelength: u.Quantity
    flux: u.Quantity
    ivar: np.ndarray | None
    mask: np.ndarray
    medium: str
    meta: dict = field(default_factory=empty_meta)
    source: str = ""
    index: int = 0

    @property
    def good(self):
        """ndarray of bool: pixels that are usable (not masked, finite flux)."""
        good = ~np.asarray(self.mask, dtype=bool) & np.isfinite(self.flux.value)
        if self.ivar is not None:
            good &= self.ivar > 0
        return good

    def validate(self):
        """Check the guarantees downstream code relies on.

        Returns
        -------
        Spectrum
            ``self``, so a reader can ``return spectrum.validate()``.

        Raises
        ------
        ReaderError
            For a non-finite, non-positive or non-increasing wavelength, no
            pixels, arrays of different lengths or not 1-D, flux without a
            finite value, all zero or with fewer than :data:`MIN_GOOD_PIXELS`
            good pixels, a negative or non-finite inverse variance, or an
            unknown medium.
        """
        path = self.source or "<spectrum>"
        if not isinstance(self.wavelength, u.Quantity) or (
            self.wavelength.unit.physical_type != "length"
        ):
            raise ReaderError(path, "wavelength is not a length Quantity")
        if not isinstance(self.flux, u.Quantity):
            raise ReaderError(path, "flux is not a Quantity")
        arrays = {"wavelength": self.wavelength, "flux": self.flux,
                  "mask": self.mask}
        if self.ivar is not None:
            arrays["ivar"] = self.ivar
        check_lengths(path, arrays)
        for name, values in arrays.items():
            if np.ndim(values) != 1:
                raise ReaderError(path, f"{name} has {np.ndim(values)} "
                                  "dimensions, expected 1")
        wave = self.wavelength.value
        if wave.size == 0:
            raise ReaderError(path, "the spectrum has no pixels")
        if not np.all(np.isfinite(wave)):
            raise ReaderError(path, f"wavelength has {np.sum(~np.isfinite(wave))} "
                              "non-finite values")
        if np.any(wave <= 0):
            raise ReaderError(path, "wavelength has non-positive values "
                              f"(minimum {wave.min():g} {self.wavelength.unit})")
        steps = np.diff(wave)
        if np.any(steps <= 0):
            first = int(np.argmax(steps <= 0)) + 1
            raise ReaderError(path, "wavelength is not strictly increasing "
                              f"(first at pixel {first})")
        if self.medium not in _MEDIA:
            raise ReaderError(path, f"medium {self.medium!r} is not one of {_MEDIA}")
        flux = self.flux.value
        finite = np.isfinite(flux)
        if not np.any(finite):
            raise ReaderError(path, "flux is all NaN" if np.all(np.isnan(flux))
                              else "flux has no finite values (NaN or infinite)")
        if np.all(flux[finite] == 0):
            raise ReaderError(path, "flux is all zero")
        if self.ivar is not None:
            if not np.all(np.isfinite(self.ivar)):
                raise ReaderError(path, "ivar has non-finite values")
            if np.any(self.ivar < 0):
                raise ReaderError(path, "ivar has negative values")
        n_good = int(np.sum(self.good))
        if n_good < MIN_GOOD_PIXELS:
            raise ReaderError(path, f"only {n_good} good pixels "
                              f"(need at least {MIN_GOOD_PIXELS})")
        return self


def check_lengths(path, arrays):
    """Raise if named 1-D arrays differ in length.

    Readers call this before combining arrays, so a malformed file gives a
    ``ReaderError`` naming the arrays instead of a numpy broadcasting error.

    Parameters
    ----------
    path : str
        File named in the error.
    arrays : dict of str to array-like
        Arrays by role ("wavelength", "flux", ...).

    Raises
    ------
    ReaderError
        When the lengths differ.
    """
    lengths = {name: int(np.size(a)) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} {n}" for name, n in lengths.items())
        raise ReaderError(path, f"array lengths differ: {listed}")


def estimate_snr(spectrum):
    """Median signal-to-noise ratio per pixel of a spectrum.

    With an inverse variance this is the median of ``flux * sqrt(ivar)`` over
    good pixels, i.e. the S/N the data provider states.  Without one it is the
    DER_SNR estimator of Stoehr et al. (2008, ASP Conf. Ser. 394, 505), which
    infers the noise from the pixel-to-pixel scatter and needs no error array.

    Parameters
    ----------
    spectrum : Spectrum
        A validated spectrum.

    Returns
    -------
    float
        The S/N per pixel; NaN when there are too few good pixels (DER_SNR
        needs at least 5).
    """
    good = spectrum.good
    flux = np.asarray(spectrum.flux.value, dtype=float)
    if spectrum.ivar is not None:
        return float(np.median(flux[good] * np.sqrt(spectrum.ivar[good])))
    return _der_snr(flux[good])


def _der_snr(flux):
    """DER_SNR (Stoehr et al. 2008) of the good pixels of a spectrum.

    The noise is ``1.482602 / sqrt(6) * median(|2 f_i - f_(i-2) - f_(i+2)|)``,
    which for white Gaussian noise equals its sigma while being insensitive to
    a smooth continuum and to lines wider than a few pixels.

    Parameters
    ----------
    flux : ndarray
        Flux of the good pixels, in wavelength order.

    Returns
    -------
    float
        Median signal over the noise estimate; NaN for fewer than 5 pixels.
    """
    flux = flux[flux != 0]
    if flux.size < 5:
        return float("nan")
    signal = np.median(flux)
    noise = 0.6052697 * np.median(np.abs(2.0 * flux[2:-2] - flux[:-4] - flux[4:]))
    if noise == 0:
        return float("inf")
    return float(signal / noise)


def stem(path):
    """File name without the FITS/VOTable/gzip suffixes, as an id fragment.

    Only used to build identifiers: readers never pick a format by suffix.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    str
        e.g. ``"XShooter_XQ100"`` for ``XShooter_XQ100.fits.gz``.
    """
    name = Path(path).name
    for suffix in (".gz", ".fits", ".fit", ".fts", ".xml", ".vot"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def make_obs_id(*parts):
    """Join parts into a short id of lowercase ``[a-z0-9_]``.

    Parameters
    ----------
    *parts : str or int

    Returns
    -------
    str
        e.g. ``make_obs_id("stelib", "HD002857")`` -> ``"stelib_hd002857"``.
    """
    text = "_".join(str(p) for p in parts if p is not None and str(p) != "")
    text = "".join(c if c.isascii() and c.isalnum() else "_" for c in text.lower())
    while "__" in text:
        text = text.replace("__", "_")
    return text.strip("_")
