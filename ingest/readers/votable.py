"""Layout: IVOA Spectral Data Model VOTables (what DaCHS serves), PARAMs
with null values included.
"""
from __future__ import annotations

import astropy.units as u
import numpy as np

from retrspect.ingest.errors import ReaderError
from retrspect.ingest.readers.build import build_spectrum
from retrspect.ingest.readers.columns import assign_roles
from retrspect.ingest.readers.headers import object_class, parse_unit
from retrspect.ingest.readers.safety import VOTableSource
from retrspect.ingest.spectrum import empty_meta, make_obs_id, stem

# --------------------------------------------------------------------------
# Format: IVOA Spectral Data Model VOTables (DaCHS SDM output)
# --------------------------------------------------------------------------

_SDM_PARAMS = {
    "target.name": "target_name",
    "target.class": "object_class",
    "target.redshift": "redshift",
    "char.spatialaxis.coverage.location.value": "position",
    "char.timeaxis.coverage.location.value": "date_obs",
    "char.spectralaxis.respower": "resolving_power",
    "char.spectralaxis.resolution": "resolution",
    "char.spectralaxis.coverage.location.value": "spectral_location",
    "dataid.instrument": "instrument",
    "dataid.collection": "collection",
}


def _sdm_key(utype):
    text = (utype or "").strip().lower()
    text = text.split(":", 1)[1] if ":" in text else text
    return text[len("spectrum."):] if text.startswith("spectrum.") else text


def _param_value(param, null_params):
    """A PARAM's value, or None when it is null (``value=""``, which
    astropy gives as None, a masked value, or zeros for arrays)."""
    value = param.value
    if (param.ID or param.name) in null_params or value is None or np.all(np.ma.getmaskarray(value)):
        return None
    if isinstance(value, (str, bytes)):
        return value if value.strip() else None
    return np.ma.filled(value, np.nan) if np.ma.isMaskedArray(value) else value


def _param_length(param, value):
    """A spectral-axis PARAM (Resolution, Coverage.Location) in Angstrom."""
    unit = parse_unit(param.unit) if param.unit else u.AA
    if unit is None or unit.physical_type != "length":
        return None
    number = float(value)
    return (number * unit).to_value(u.AA) if np.isfinite(number) else None


def _sdm_meta(params, path, index, count, null_params=frozenset()):
    """Standard metadata from an SDM VOTable's PARAMs (null ones ignored).

    The resolving power is the SDM's ``Char.SpectralAxis.ResPower``, or else
    its ``Resolution`` (a wavelength width) divided into the spectral
    ``Coverage.Location`` (what SSAP services such as DaCHS serve).
    """
    meta = empty_meta(obs_id=make_obs_id(stem(path), index if count > 1 else None))
    lengths = {}
    for param in params:
        key = _SDM_PARAMS.get(_sdm_key(param.utype))
        value = None if key is None else _param_value(param, null_params)
        if value is None:
            continue
        if key == "position":
            values = np.ravel(np.asarray(value, dtype=float))
            if values.size == 2 and np.all(np.isfinite(values)):
                meta["ra"], meta["dec"] = float(values[0]), float(values[1])
        elif key in ("resolution", "spectral_location"):
            if np.size(value) == 1:
                lengths[key] = _param_length(param, value)
        elif key in ("redshift", "resolving_power", "date_obs"):
            number = float(value) if np.size(value) == 1 else None
            meta[key] = number if number is not None and np.isfinite(number) else None
        elif key == "object_class":
            meta[key] = object_class(value)
        else:
            meta[key] = str(value).strip() or None
    if meta["resolving_power"] is None and lengths.get("resolution") \
            and lengths.get("spectral_location"):
        meta["resolving_power"] = (lengths["spectral_location"]
                                   / lengths["resolution"])
    return meta


def _votable_tables(source):
    """(table, roles, params) of VOTable tables with wavelength and flux.

    Roles map to field positions, because astropy names the columns of
    ``table.array`` by field ID when there is one and by name otherwise.
    """
    found = []
    for resource in source.votable.resources:
        for table in resource.tables:
            columns = [(str(i), f.utype, f.ucd) for i, f in enumerate(table.fields)]
            named = assign_roles(columns)
            # Names are the last resort: re-run with them for fields that
            # have neither a usable utype nor UCD.
            by_name = assign_roles([(f.name or f.ID or "", None, None)
                                    for f in table.fields])
            positions = {f.name or f.ID or "": i for i, f in enumerate(table.fields)}
            roles = {role: int(index) for role, index in named.items()}
            for role, name in by_name.items():
                roles.setdefault(role, positions[name])
            if "loglam" in roles and "wave" not in roles:
                continue  # log wavelengths in a VOTable: not a layout we know
            if "wave" in roles and "flux" in roles:
                params = (list(source.votable.params) + list(resource.params)
                          + list(table.params))
                found.append((table, roles, params))
    return found


def sniff_votable(source):
    return isinstance(source, VOTableSource) and bool(_votable_tables(source))


def _field_unit(field_, default):
    unit = parse_unit(field_.unit) if field_.unit is not None else None
    return unit if unit is not None else default


def read_votable(source):
    found = _votable_tables(source)
    spectra = []
    for position, (table, roles, params) in enumerate(found):
        names = table.array.dtype.names

        def column(role, table=table, roles=roles, names=names):
            if role not in roles:
                return None
            values = table.array[names[roles[role]]]
            if values.dtype == object or values.ndim > 1:
                raise ReaderError(source.path, f"VOTable field "
                                  f"{table.fields[roles[role]].name!r} holds an "
                                  "array in each row; SDM VOTables have one "
                                  "value per row")
            return np.ma.filled(np.ma.asarray(values, dtype=float), np.nan)

        wave_field = table.fields[roles["wave"]]
        wave_unit = _field_unit(wave_field, u.AA)
        if wave_unit.physical_type != "length":
            wave_unit = u.AA
        flux_unit = _field_unit(table.fields[roles["flux"]], u.dimensionless_unscaled)
        error = column("error")
        if error is not None:
            error_unit = _field_unit(table.fields[roles["error"]], None)
            if error_unit is not None:
                error = error * error_unit
        # SDM: a spectral axis UCD em.wl;obs.atmos marks air; em.wl is vacuum.
        medium = "air" if "obs.atmos" in (wave_field.ucd or "").lower() else "vacuum"
        quality = column("quality")
        spectra.append(build_spectrum(
            source.path, column("wave") * wave_unit, column("flux") * flux_unit,
            medium=medium, index=position,
            meta=_sdm_meta(params, source.path, position, len(found),
                           source.null_params),
            ivar=column("ivar"), error=error,
            bad=None if quality is None else quality != 0))
    return spectra

