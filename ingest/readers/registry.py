"""The registry of layouts and the one entry point, :func:`read_spectra`:
layouts are tried in order, the first whose sniff matches reads the file.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from retrspect.ingest.errors import ReaderError
from retrspect.ingest.readers.csv_table import read_csv, sniff_csv
from retrspect.ingest.readers.fits_table import read_table, sniff_table
from retrspect.ingest.readers.image_1d import (
    read_error_file,
    read_image_1d,
    read_split_flux,
    sniff_error_file,
    sniff_image_1d,
    sniff_split_flux,
)
from retrspect.ingest.readers.lamost import (
    read_lamost_image,
    read_lamost_table,
    sniff_lamost_image,
    sniff_lamost_table,
)
from retrspect.ingest.readers.manga import read_manga, sniff_manga
from retrspect.ingest.readers.safety import (
    DATA_ERRORS,
    WARNINGS_LOCK,
    FitsSource,
    container_kind,
    open_csv,
    open_fits,
    open_votable,
)
from retrspect.ingest.readers.sdss import (
    read_sdss_image,
    read_spec_lite,
    sniff_sdss_image,
    sniff_spec_lite,
)
from retrspect.ingest.readers.votable import read_votable, sniff_votable

# --------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Format:
    """One file layout: how to recognise it and how to read it.

    Attributes
    ----------
    name : str
    sniff : callable
        ``sniff(source) -> bool`` from the file's content only.
    read : callable
        ``read(source) -> list[Spectrum]``; raises ReaderError.
    """

    name: str
    sniff: Callable
    read: Callable


#: Layouts in the order they are tried: specific ones before generic ones.
FORMATS = [
    Format("manga-test-spectra", sniff_manga, read_manga),
    Format("sdss-spec-lite", sniff_spec_lite, read_spec_lite),
    Format("lamost-coadd-table", sniff_lamost_table, read_lamost_table),
    Format("lamost-image", sniff_lamost_image, read_lamost_image),
    Format("sdss-image", sniff_sdss_image, read_sdss_image),
    Format("sdm-votable", sniff_votable, read_votable),
    Format("binary-table", sniff_table, read_table),
    Format("error-companion", sniff_error_file, read_error_file),
    Format("flux-error-pair", sniff_split_flux, read_split_flux),
    Format("image-1d", sniff_image_1d, read_image_1d),
    Format("csv-table", sniff_csv, read_csv),
]


def _describe(source):
    if isinstance(source, FitsSource):
        parts = []
        for hdu in source.hdul[:10]:
            shape = ("x".join(str(n) for n in np.shape(hdu.data))
                     if hdu.data is not None else "empty")
            parts.append(f"{type(hdu).__name__} {hdu.name or '-'} {shape}")
        if len(source.hdul) > 10:
            parts.append(f"and {len(source.hdul) - 10} more HDUs")
        return "FITS: " + "; ".join(parts)
    return "VOTable without wavelength and flux fields"


def read_spectra(path):
    """Read every spectrum in a file, whatever its layout.

    Parameters
    ----------
    path : str or os.PathLike
        A FITS file (plain or gzip-compressed) or a VOTable.

    Returns
    -------
    list of Spectrum
        Validated, in file order, ``index`` counting from 0.

    Raises
    ------
    ReaderError
        The file is missing, not FITS or VOTable, damaged, in no known
        layout, lacks what the layout needs, or fails validation.
    """
    path = Path(path)
    if not path.exists():
        raise ReaderError(path, "no such file")
    if path.is_dir():
        raise ReaderError(path, "is a directory, not a spectrum file")
    # Warnings are held back until the file is accepted: astropy and numpy
    # warn about what makes a damaged file damaged (a column repeat count
    # of 0, an overflowing WCS), and the refusal already says it.  Overflow
    # and invalid float operations give inf/NaN, which validation refuses.
    # catch_warnings swaps process-wide state, so reads in threads of one
    # process (the DaCHS server) take turns: interleaved, one thread could
    # restore another's recording hook and leave it collecting every later
    # warning of the process.
    with WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught, \
            np.errstate(all="ignore"):
        warnings.simplefilter("always")
        spectra = _read_layout(path)
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category,
                               warning.filename, warning.lineno)
    return spectra


def _read_layout(path):
    """Open ``path`` and read it with the first layout whose sniff matches."""
    try:
        kind = container_kind(path)
        opener = {"fits": open_fits, "votable": open_votable,
                  "csv": open_csv}[kind]
        with opener(path) as source:
            for fmt in FORMATS:
                try:
                    if not fmt.sniff(source):
                        continue
                    return fmt.read(source)
                except ReaderError:
                    raise
                except DATA_ERRORS as exc:
                    reason = f"{fmt.name}: {type(exc).__name__}: {exc}"
                    raise ReaderError(path, reason) from exc
            raise ReaderError(path, f"no known spectrum layout ({_describe(source)})")
    except OSError as exc:
        raise ReaderError(path, f"cannot read file: {exc}") from exc

