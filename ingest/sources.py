"""From a row of the spectra table to its spectrum, and to what is served.

A row names its spectrum by ``(source_file, source_index)``: the file
relative to the archive's inputs directory, and the reader's
:attr:`~ingest.spectrum.Spectrum.index` of the spectrum in that file.  The
index is *not* a position in the list a reader returns: readers drop
spectra they cannot use (a fully masked MaNGA row, for instance), so the
indices of one file can run 0, 1, 2, 3, 4, 6, 7.  :func:`spectrum_of_row` is
the one place that resolves a row; every path that serves or searches with
an archive spectrum (datalink, SODA and getData, search by example and its
plots, previews, re-embedding) comes through it or reads whole files.

:func:`served_arrays` is what the archive serves of a spectrum: vacuum
wavelengths in Angstrom, flux and its error, NaN where masked.
"""
from __future__ import annotations

import os

import numpy as np
from astropy import units as u

from retrspect.ingest import bundled
from retrspect.ingest.preprocess import vacuum_wavelength
from retrspect.ingest.readers import read_spectra
from retrspect.ingest.errors import ReaderError
from retrspect.ingest.spectrum import Spectrum


def read_source(source_path: str) -> list[Spectrum]:
    """All spectra in one staged source file, with library metadata added.

    Staged files are symlinks into the packages that ship them; reading the
    resolved path lets :func:`ingest.bundled.enrich` recognise the library.
    """
    spectra = read_spectra(os.path.realpath(source_path))
    for spectrum in spectra:
        bundled.enrich(spectrum)
    return spectra


def spectrum_of_row(inputs_dir: str, source_file: str, source_index: int,
                    obs_id: str | None = None) -> Spectrum:
    """The spectrum a row of the spectra table describes.

    Parameters
    ----------
    inputs_dir : str
        DaCHS's inputs directory (``source_file`` is relative to it).
    source_file : str
    source_index : int
        The reader's index of the spectrum within the file.
    obs_id : str, optional
        The row's obs_id; when given, the spectrum found must carry it, so
        a file changed since ingest cannot serve another spectrum under this
        row's metadata.

    Raises
    ------
    ReaderError
        The file is unreadable, holds no spectrum with this index, or the
        spectrum there is not the row's.
    """
    path = os.path.join(inputs_dir, source_file)
    spectra = read_source(path)
    for spectrum in spectra:
        if spectrum.index == source_index:
            break
    else:
        raise ReaderError(path, f"holds no spectrum with index {source_index} "
                                f"(its indices: "
                                f"{[s.index for s in spectra]})")
    if obs_id is not None and spectrum.meta["obs_id"] != obs_id:
        raise ReaderError(path, f"spectrum {source_index} is "
                                f"{spectrum.meta['obs_id']!r}, not the row's "
                                f"{obs_id!r}: the file changed since ingest")
    return spectrum


def served_arrays(spectrum: Spectrum) -> dict[str, np.ndarray]:
    """Vacuum wavelength (A), flux and its error as served; masked pixels NaN."""
    wave = vacuum_wavelength(spectrum).to_value(u.AA)
    flux = np.array(spectrum.flux.value, dtype=float)
    flux[spectrum.mask] = np.nan
    if spectrum.ivar is None:
        error = np.full_like(flux, np.nan)
    else:
        with np.errstate(divide="ignore"):
            error = np.where(spectrum.ivar > 0, 1.0 / np.sqrt(spectrum.ivar),
                             np.nan)
        error[spectrum.mask] = np.nan
    return {"spectral": wave, "flux": flux, "flux_error": error}
