"""Assembling a validated Spectrum from a file's arrays: the bad-pixel rules
every layout shares.
"""
from __future__ import annotations

import astropy.units as u
import numpy as np

from retrspect.ingest.spectrum import Spectrum, check_lengths

# --------------------------------------------------------------------------
# Assembling a Spectrum
# --------------------------------------------------------------------------

def build_spectrum(path, wavelength, flux, *, medium, meta, index=0,
                   ivar=None, error=None, bad=None):
    """Combine arrays from a file into a validated Spectrum.

    Every reader goes through here so the bad-pixel rules are the same for
    all formats: non-finite flux, flux exactly 0 (the fill value of
    unobserved pixels in STELIB, MaNGA and the echelle quasar files), an
    unknown or zero error, and pixels the file flags are masked.

    Parameters
    ----------
    path : str or Path
    wavelength : Quantity, shape (N,)
        Converted to Angstrom so all readers agree.
    flux : Quantity, shape (N,)
    medium : {"air", "vacuum"}
    meta : dict
    index : int
    ivar : array-like, shape (N,), optional
        Inverse variance in ``flux.unit**-2``; NaN counts as unknown (0).
    error : array-like or Quantity, shape (N,), optional
        1-sigma error; converted to ``ivar``.  Zero, negative (popler's "no
        information") or NaN errors give ivar 0; a column without a single
        usable error counts as absent (ivar None).
    bad : array-like of bool, shape (N,), optional
        Pixels the file flags.

    Returns
    -------
    Spectrum
        Validated.

    Raises
    ------
    ReaderError
        Array lengths differ, or validation fails.
    """
    arrays = {"wavelength": wavelength, "flux": flux}
    for name, values in (("ivar", ivar), ("error", error), ("mask", bad)):
        if values is not None:
            arrays[name] = values
    check_lengths(path, arrays)
    flux_values = np.asarray(flux.value, dtype=float)
    mask = ~np.isfinite(flux_values) | (flux_values == 0)
    if error is not None:
        if isinstance(error, u.Quantity):
            if error.unit.is_equivalent(flux.unit):
                error = error.to_value(flux.unit)
            else:
                error = error.value
        error = np.asarray(error, dtype=float)
        usable = np.isfinite(error) & (error > 0)
        if np.any(usable):
            ivar = np.zeros_like(error)
            ivar[usable] = 1.0 / error[usable] ** 2
        # else: an error column with no value at all is no error column
        # (DaCHS serves unknown errors as NULL/NaN in SDM VOTable and FITS)
    if ivar is not None:
        ivar = np.asarray(ivar, dtype=float)
        ivar = np.where(np.isfinite(ivar), ivar, 0.0)
        mask |= ivar == 0
    if bad is not None:
        mask |= np.asarray(bad, dtype=bool)
    spectrum = Spectrum(
        wavelength=u.Quantity(np.asarray(wavelength.to_value(u.AA), dtype=float),
                              u.AA),
        flux=u.Quantity(flux_values, flux.unit),
        ivar=ivar,
        mask=mask,
        medium=medium,
        meta=meta,
        source=str(path),
        index=index,
    )
    return spectrum.validate()

