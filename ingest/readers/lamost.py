"""Layouts: LAMOST low-resolution spectra (DR5+ table, DR1-4 image).
"""
from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.io import fits

from retrspect.ingest.errors import ReaderError
from retrspect.ingest.readers.build import build_spectrum
from retrspect.ingest.readers.columns import columns_upper
from retrspect.ingest.readers.headers import header_medium, header_meta
from retrspect.ingest.readers.safety import FitsSource
from retrspect.ingest.spectrum import make_obs_id, stem

#: LAMOST's low-resolution survey, R ~ 1800 at 5500 A (LAMOST data release
#: documentation); the files do not state it.
LAMOST_RESOLVING_POWER = 1800.0


# --------------------------------------------------------------------------
# Format: LAMOST low-resolution spectra (DR5+ table, DR1-4 image)
# --------------------------------------------------------------------------

def _lamost_meta(info, path):
    meta = header_meta(info, path)
    obsid = info.get("OBSID")
    meta.update(
        obs_id=make_obs_id("lamost", obsid if obsid is not None else stem(path)),
        target_name=info.text("DESIG", "OBJNAME", "OBJECT"),
        collection="LAMOST",
        instrument="LAMOST LRS",
        resolving_power=LAMOST_RESOLVING_POWER,
    )
    return meta


def sniff_lamost_table(source):
    if not isinstance(source, FitsSource):
        return False
    index = source.index_of("COADD")
    if index is None or not isinstance(source.hdul[index], fits.BinTableHDU):
        return False
    cols = columns_upper(source.hdul[index])
    return "WAVELENGTH" in cols and "FLUX" in cols


def read_lamost_table(source):
    table = source.hdul[source.index_of("COADD")]
    cols = columns_upper(table)
    if len(table.data) != 1:
        raise ReaderError(source.path, f"LAMOST COADD table has {len(table.data)} "
                          "rows, expected 1")
    row = table.data[0]

    def array(name):
        return np.ravel(np.asarray(row[cols[name]])) if name in cols else None

    bad = None
    for name in ("ANDMASK", "AND_MASK"):
        if name in cols:
            bad = array(name) != 0
    info = source.info(0)
    # LAMOST spectra are relative-flux calibrated, in vacuum (LAMOST DR5+ docs).
    return [build_spectrum(source.path, np.asarray(array("WAVELENGTH"), float) * u.AA,
                           np.asarray(array("FLUX"), float) * u.dimensionless_unscaled,
                           medium=header_medium(info, default="vacuum"),
                           meta=_lamost_meta(info, source.path),
                           ivar=array("IVAR"), bad=bad)]


def sniff_lamost_image(source):
    if not isinstance(source, FitsSource):
        return False
    data = source.hdul[0].data
    info = source.info(0)
    return (data is not None and data.ndim == 2 and data.shape[0] == 5
            and "COEFF0" in info and "COEFF1" in info
            and ("LAMOST" in (info.text("TELESCOP") or "").upper() or "OBSID" in info))


def read_lamost_image(source):
    """Rows: flux, inverse variance, wavelength, andmask, ormask (DR1-DR4)."""
    info = source.info(0)
    data = np.asarray(source.hdul[0].data, dtype=float)
    coeff0, coeff1 = info.number("COEFF0"), info.number("COEFF1")
    if coeff0 is None or coeff1 is None:
        raise ReaderError(source.path, "COEFF0/COEFF1 are not numbers")
    wave = 10.0 ** (coeff0 + coeff1 * np.arange(data.shape[1]))
    stored = data[2]
    if np.all(stored > 0) and not np.allclose(stored, wave, rtol=1e-5):
        raise ReaderError(source.path, "the wavelength row disagrees with "
                          "COEFF0/COEFF1")
    return [build_spectrum(source.path, wave * u.AA,
                           data[0] * u.dimensionless_unscaled,
                           medium=header_medium(info, default="vacuum"),
                           meta=_lamost_meta(info, source.path),
                           ivar=data[1], bad=data[3] != 0)]

