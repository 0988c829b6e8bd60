"""Wavelength axes of 1-D FITS images: linear and log-linear WCS, IRAF
multispec, SDSS's log10 axes.
"""
from __future__ import annotations

import re

import astropy.units as u
import numpy as np

from retrspect.ingest.errors import ReaderError
from retrspect.ingest.readers.headers import parse_unit

# --------------------------------------------------------------------------
# Format: 1-D FITS images with a linear or logarithmic wavelength WCS
# --------------------------------------------------------------------------

def _multispec_wavelength(path, info, npix):
    """Wavelengths from IRAF's multispec WAT2 cards (aperture 1).

    The WAT2_nnn strings are 68-character pieces of one text; astropy strips
    their trailing blanks, so each piece is padded back before joining.
    """
    pieces, number = [], 1
    while f"WAT2_{number:03d}" in info:
        pieces.append(str(info.get(f"WAT2_{number:03d}")).ljust(68))
        number += 1
    match = re.search(r'spec1\s*=\s*"([^"]*)"', "".join(pieces))
    if match is None:
        raise ReaderError(path, "no wavelength information: multispec header "
                          "without a spec1 entry in WAT2")
    fields = match.group(1).split()
    # ap beam dtype w1 dw nw z aplow aphigh [function terms]
    dtype = int(float(fields[2]))
    w1, dw, z = float(fields[3]), float(fields[4]), float(fields[6])
    values = w1 + dw * np.arange(npix)
    if dtype == 1:
        values = 10.0 ** values
    elif dtype != 0:
        raise ReaderError(path, f"multispec dispersion type {dtype} "
                          "(non-linear) is not supported")
    return values / (1.0 + z)


def wcs_wavelength(path, info, npix):
    """Wavelengths of the pixels of a 1-D spectrum from its header WCS.

    Handles linear axes (CRVAL1 + CDELT1 or CD1_1, CRPIX1), IRAF's DC-FLAG = 1
    (CRVAL1/CDELT1 are log10 of the wavelength, whatever CTYPE1 says), the
    LOGLIN convention of UVES_popler, the FITS WAVE-LOG/AWAV-LOG axes
    (Greisen et al. 2006) and IRAF multispec linear/log-linear dispersions.

    Parameters
    ----------
    path : Path
    info : HeaderInfo
    npix : int

    Returns
    -------
    Quantity, shape (npix,)

    Raises
    ------
    ReaderError
        CRVAL1 or the increment is missing.
    """
    ctype = (info.text("CTYPE1") or "").upper()
    if ctype == "MULTISPE":
        values = _multispec_wavelength(path, info, npix)
        return values * _wcs_unit(info)
    crval = info.number("CRVAL1")
    if crval is None:
        raise ReaderError(path, "no wavelength information: "
                          + _missing_or_bad(info, "CRVAL1"))
    step = info.number("CD1_1", "CDELT1")
    if step is None:
        raise ReaderError(path, "no wavelength information: "
                          + _missing_or_bad(info, "CD1_1", "CDELT1"))
    if step == 0:
        key = "CD1_1" if info.number("CD1_1") is not None else "CDELT1"
        raise ReaderError(path, f"no wavelength information: {key} = 0 puts "
                          "every pixel at the same wavelength")
    crpix = info.number("CRPIX1")
    offset = np.arange(npix) + 1.0 - (1.0 if crpix is None else crpix)
    if (info.number("DC-FLAG") == 1 or ctype == "LOGLIN"
            or _log10_wave_log(info, ctype, crval)):
        values = 10.0 ** (crval + offset * step)
    elif ctype.endswith("-LOG"):
        values = crval * np.exp(offset * step / crval)
    else:
        values = crval + offset * step
    return values * _wcs_unit(info)


def _log10_wave_log(info, ctype, crval):
    """True for SDSS-style ``WAVE-LOG`` axes that hold log10(lambda / A).

    mangadap's MaStar libraries write CTYPE1 = 'WAVE-LOG', CRVAL1 = 3.5589,
    CDELT1 = 1e-4 and no CUNIT1: read as FITS WAVE-LOG in Angstrom that is
    3.6-4.0 A, read as log10 it is 3622-11100 A.  A real logarithmic axis
    starting below 5 A (X-rays) would state its unit.
    """
    return (ctype.endswith("-LOG") and info.text("CUNIT1") is None
            and 0.0 < crval < 5.0)


def _missing_or_bad(info, *keys):
    """Words for WCS keywords that give no finite number: absent or bad."""
    present = [key for key in keys if info.get(key) is not None]
    if not present:
        if len(keys) == 1:
            return f"the image header has no {keys[0]}"
        return f"the image header has neither {' nor '.join(keys)}"
    return ", ".join(f"{key} = {str(info.get(key))[:30]!r}" for key in present) + (
        " is not a finite number" if len(present) == 1
        else " are not finite numbers")


def _wcs_unit(info):
    """Wavelength unit from CUNIT1 or IRAF's WAT1 "units=", else Angstrom."""
    unit = parse_unit(info.text("CUNIT1"))
    if unit is None:
        match = re.search(r"units=(\S+)", info.text("WAT1_001") or "")
        unit = parse_unit(match.group(1)) if match else None
    if unit is None or unit.physical_type != "length":
        unit = u.AA
    return unit


