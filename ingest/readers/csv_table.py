"""Layout: CSV (or whitespace) tables with units in the header, and the CSV
that DaCHS serves for SSAP spectra (units in its metadata comments).
"""
from __future__ import annotations

import re

import astropy.units as u
import numpy as np

from retrspect.ingest.errors import ReaderError
from retrspect.ingest.readers.build import build_spectrum
from retrspect.ingest.readers.headers import parse_unit
from retrspect.ingest.readers.safety import TextSource
from retrspect.ingest.spectrum import empty_meta, make_obs_id, stem

_CSV_COLUMN = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:[\[(]\s*(.*?)\s*[\])])?\s*$")
#: DaCHS's CSV of an SSAP spectrum states its metadata in comment lines
#: ``# key = value // description``
_DACHS_COMMENT = re.compile(r"^(\w+) = (.*?)(?: // .*)?$")


def sniff_csv(source):
    return isinstance(source, TextSource)


def _dachs_params(comments):
    """``key -> value`` of DaCHS's metadata comments (``key = value //
    description``), empty values left out."""
    params = {}
    for comment in comments:
        match = _DACHS_COMMENT.match(comment)
        if match and match.group(2).strip():
            params[match.group(1).lower()] = match.group(2).strip()
    return params


def _dachs_number(params, key):
    try:
        value = float(params[key])
    except (KeyError, ValueError):
        return None
    return value if np.isfinite(value) else None


def read_csv(source):
    """wavelength [unit], flux [unit] and optional error [unit] columns.

    Units must be given in the header (``wavelength [Angstrom]``); a comment
    line ``# medium: air`` marks air wavelengths (vacuum otherwise).  The
    CSV an SSAP service made with DaCHS serves (columns ``spectral, flux,
    flux_error``) gives them in its metadata comments instead:
    ``ssa_spectralunit``, ``ssa_fluxunit``, ``ssa_spectralucd`` (em.wl;obs.atmos
    for air) and the resolution ``ssa_specres`` at ``ssa_specmid`` (metres).
    """
    path, table = source.path, source.table
    dachs = _dachs_params(source.comments)
    columns = {}
    for name in table.colnames:
        match = _CSV_COLUMN.match(name)
        if not match:
            raise ReaderError(path, f"cannot read column header {name!r}; "
                                    "write e.g. 'wavelength [Angstrom]'")
        label, unit_text = match.group(1).lower(), match.group(2)
        role = ("wavelength" if label.startswith(("wave", "lambda", "wl"))
                or (label == "spectral" and "ssa_spectralunit" in dachs)
                else "flux" if label.startswith("flux") and
                not label.startswith("flux_err")
                else "error" if label.startswith(("err", "sigma", "unc",
                                                  "flux_err"))
                else None)
        if role == "wavelength" and unit_text is None:
            unit_text = dachs.get("ssa_spectralunit")
        if role == "flux" and unit_text is None:
            unit_text = dachs.get("ssa_fluxunit")
        if role and role not in columns:
            columns[role] = (name, unit_text)
    for role in ("wavelength", "flux"):
        if role not in columns:
            raise ReaderError(path, f"CSV has no {role} column (header "
                                    f"{', '.join(table.colnames)})")
    name, unit_text = columns["wavelength"]
    wave_unit = parse_unit(unit_text)
    if wave_unit is None or wave_unit.physical_type != "length":
        raise ReaderError(path, f"wavelength unit missing or not a length: "
                                f"{unit_text!r}; give it in the header, e.g. "
                                "'wavelength [Angstrom]'")
    flux_name, flux_unit_text = columns["flux"]
    flux_unit = parse_unit(flux_unit_text) or u.dimensionless_unscaled
    try:
        wavelength = np.ma.filled(np.ma.asarray(table[name], dtype=float),
                                  np.nan) * wave_unit
        flux = np.ma.filled(np.ma.asarray(table[flux_name], dtype=float),
                            np.nan) * flux_unit
        error = (np.ma.filled(np.ma.asarray(table[columns["error"][0]],
                                            dtype=float), np.nan)
                 if "error" in columns else None)
    except (TypeError, ValueError) as exc:
        raise ReaderError(path, f"non-numeric values in the CSV: {exc}") from exc
    air = (any(re.match(r"medium\s*[:=]\s*air", c, re.I)
               for c in source.comments)
           or "obs.atmos" in dachs.get("ssa_spectralucd", "").lower())
    meta = empty_meta(obs_id=make_obs_id(stem(path)),
                      target_name=dachs.get("ssa_targname"),
                      collection=dachs.get("ssa_collection"))
    resolution = _dachs_number(dachs, "ssa_specres")
    centre = _dachs_number(dachs, "ssa_specmid")
    if resolution and centre and resolution > 0:
        meta["resolving_power"] = centre / resolution
    return [build_spectrum(path, wavelength, flux,
                           medium="air" if air else "vacuum", meta=meta,
                           error=error)]

