"""Layout: FITS binary tables (ESO Phase 3 1-D spectra, SDM in FITS, plain
columns), one spectrum per row of array columns or one from scalar
columns.
"""
from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.io import fits

from retrspect.ingest.errors import ReaderError
from retrspect.ingest.readers.build import build_spectrum
from retrspect.ingest.readers.columns import assign_roles
from retrspect.ingest.readers.headers import header_medium, header_meta, parse_unit
from retrspect.ingest.readers.safety import FitsSource


def _table_hdus(source):
    """(index, roles, columns, info) of binary tables with wavelength and flux."""
    found = []
    for i, hdu in enumerate(source.hdul):
        if not isinstance(hdu, fits.BinTableHDU) or hdu.data is None:
            continue
        info = source.info(i)
        columns = [(column.name, info.text(f"TUTYP{number}"),
                    info.text(f"TUCD{number}"))
                   for number, column in enumerate(hdu.columns, start=1)]
        roles = assign_roles(columns)
        if ("wave" in roles or "loglam" in roles) and "flux" in roles:
            found.append((i, roles, columns, info))
    return found


def sniff_table(source):
    return isinstance(source, FitsSource) and bool(_table_hdus(source))


def _column_unit(hdu, name):
    return parse_unit(hdu.columns[name].unit)


def _table_column(data, roles, role, row):
    """A role's values in one row (array columns) or the whole column, or None."""
    if role not in roles:
        return None
    values = data[roles[role]] if row is None else data[roles[role]][row]
    return np.ravel(np.asarray(values))


def read_table(source):
    """One spectrum per row of array columns, or one from scalar columns."""
    index, roles, columns, table_info = _table_hdus(source)[0]
    hdu = source.hdul[index]
    info = source.info(0).merged(table_info)
    data = hdu.data
    if len(data) == 0:
        raise ReaderError(source.path, f"binary table in HDU {index} has no rows")
    wave_name = roles.get("wave") or roles["loglam"]
    array_columns = np.ndim(data[wave_name][0]) > 0
    rows = range(len(data)) if array_columns else [None]
    wave_unit = _column_unit(hdu, wave_name) if "wave" in roles else u.AA
    if wave_unit is None or wave_unit.physical_type != "length":
        wave_unit = u.AA  # unit-less wavelength columns are Angstrom by habit
    flux_unit = _column_unit(hdu, roles["flux"]) or u.dimensionless_unscaled
    error_unit = _column_unit(hdu, roles["error"]) if "error" in roles else None
    ucds = {name: (ucd or "") for name, _, ucd in columns}
    # SDM: the spectral axis UCD em.wl;obs.atmos marks air; em.wl is vacuum.
    if "obs.atmos" in ucds.get(wave_name, "").lower():
        medium = "air"
    else:
        medium = header_medium(info, default="vacuum")
    spectra = []
    for position, row in enumerate(rows):
        values = {role: _table_column(data, roles, role, row)
                  for role in ("wave", "loglam", "flux", "error", "ivar",
                               "quality", "mask")}
        if values["wave"] is not None:
            wave = values["wave"].astype(float)
        else:
            wave = 10.0 ** values["loglam"].astype(float)
        error = values["error"]
        if error is not None and error_unit is not None:
            error = error.astype(float) * error_unit
        bad = None
        for flags in (values["quality"], values["mask"]):
            if flags is not None:
                bad = (flags != 0) if bad is None else bad | (flags != 0)
        spectra.append(build_spectrum(
            source.path, wave * wave_unit,
            values["flux"].astype(float) * flux_unit,
            medium=medium, index=position,
            meta=header_meta(info, source.path, position, len(rows)),
            ivar=values["ivar"], error=error, bad=bad))
    return spectra

