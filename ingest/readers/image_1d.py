"""Layouts: 1-D FITS images with a wavelength WCS, and flux and error in two
files (linetools' ESI and MagE quasars).
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits

from retrspect.ingest.errors import ReaderError
from retrspect.ingest.readers.build import build_spectrum
from retrspect.ingest.readers.headers import header_medium, header_meta, parse_unit
from retrspect.ingest.readers.safety import FitsSource, open_fits
from retrspect.ingest.readers.wcs import wcs_wavelength
from retrspect.ingest.spectrum import stem

# linetools ships some spectra as a flux file and an error file side by side.
_FLUX_ERROR_SUFFIXES = (("_f", "_e"), ("_nF", "_nE"), ("_F", "_E"))



def _image_hdu_index(source):
    """Index of the first HDU holding image data, or None."""
    for i, hdu in enumerate(source.hdul):
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)) and hdu.data is not None:
            return i
    return None


def _image_planes(source, index):
    """Flux and error arrays of a 1-D, single-row or IRAF multispec image.

    Returns
    -------
    tuple
        ``(flux, error)``; error None when the image has no sigma plane.
        None when the image is not one spectrum.
    """
    data = source.hdul[index].data
    if data.ndim == 1:
        return data, None
    if data.ndim == 2 and data.shape[0] == 1:
        return data[0], None
    if data.ndim == 3 and data.shape[1] == 1:
        # IRAF multispec bands: BANDIDn names each plane ("spectrum", "sigma").
        info = source.info(index)
        error = None
        for band in range(data.shape[0]):
            name = (info.text(f"BANDID{band + 1}") or "").lower()
            if "sigma" in name or "error" in name:
                error = data[band, 0]
        return data[0, 0], error
    return None


def sniff_image_1d(source):
    if not isinstance(source, FitsSource):
        return False
    index = _image_hdu_index(source)
    return index is not None and _image_planes(source, index) is not None


def _image_spectrum(source, error=None):
    """Read a 1-D image spectrum, optionally with an error array from elsewhere."""
    index = _image_hdu_index(source)
    info = source.info(0).merged(source.info(index)) if index else source.info(0)
    flux, plane_error = _image_planes(source, index)
    flux = np.asarray(flux, dtype=float)
    if error is None:
        error = plane_error
    if error is None and index + 1 < len(source.hdul):
        # An ERROR/SIGMA extension right after the flux image.
        following = source.hdul[index + 1]
        if (following.name.upper() in ("ERR", "ERROR", "SIGMA", "NOISE")
                and following.data is not None and following.data.size == flux.size):
            error = np.ravel(following.data)
    wave = wcs_wavelength(source.path, info, flux.size)
    unit = parse_unit(info.text("BUNIT")) or u.dimensionless_unscaled
    # Ground-based IRAF-era libraries (MILES, STELIB) are in air; headers
    # that know better say so with VACUUM, AIRORVAC or CTYPE1 = WAVE.
    medium = header_medium(info, default="air")
    return build_spectrum(source.path, wave, flux * unit, medium=medium,
                          meta=header_meta(info, source.path), error=error)


def read_image_1d(source):
    return [_image_spectrum(source)]


# --------------------------------------------------------------------------
# Format: flux and error in two files (linetools' ESI and MagE quasars)
# --------------------------------------------------------------------------

def _split_name(path):
    name = path.name
    base = stem(path)
    return base, name[len(base):]


def _companion(path, to_error: bool):
    """The other file of a flux/error pair beside ``path``, or None."""
    path = Path(path)
    base, rest = _split_name(path)
    for flux_suffix, error_suffix in _FLUX_ERROR_SUFFIXES:
        have, want = ((flux_suffix, error_suffix) if to_error
                      else (error_suffix, flux_suffix))
        if base.endswith(have):
            candidate = path.with_name(base[: -len(have)] + want + rest)
            if candidate.is_file():
                return candidate
    return None


def error_companion(path):
    """The error file beside a flux file (PH957_f.fits -> PH957_e.fits), or None."""
    return _companion(path, to_error=True)


def flux_companion(path):
    """The flux file beside an error file (UM184_nE.fits -> UM184_nF.fits), or None."""
    return _companion(path, to_error=False)


def sniff_error_file(source):
    return sniff_image_1d(source) and flux_companion(source.path) is not None


def read_error_file(source):
    raise ReaderError(source.path, "this is the error array of "
                      f"{flux_companion(source.path).name}; read that file")


def sniff_split_flux(source):
    return sniff_image_1d(source) and error_companion(source.path) is not None


def read_split_flux(source):
    error_path = error_companion(source.path)
    with ExitStack() as stack:
        try:
            errors = stack.enter_context(open_fits(error_path))
        except ReaderError as err:
            raise ReaderError(source.path, f"error file {error_path.name}: "
                              f"{err.reason}") from err
        if not sniff_image_1d(errors):
            raise ReaderError(source.path, f"error file {error_path.name} is "
                              "not a 1-D image")
        flux_index, error_index = _image_hdu_index(source), _image_hdu_index(errors)
        flux_info, error_info = source.info(flux_index), errors.info(error_index)
        for key in ("NAXIS1", "CRVAL1", "CDELT1", "CD1_1", "CRPIX1"):
            if flux_info.get(key) != error_info.get(key):
                raise ReaderError(source.path, f"error file {error_path.name} "
                                  f"has a different {key}")
        error = np.asarray(_image_planes(errors, error_index)[0], dtype=float)
    return [_image_spectrum(source, error=error)]

