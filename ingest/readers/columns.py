"""Which table column holds what: roles from IVOA utypes, UCDs and
conventional names, shared by FITS tables and VOTables.
"""
from __future__ import annotations

# --------------------------------------------------------------------------
# Format: binary tables (ESO Phase 3 1-D spectra, SDM in FITS, plain columns)
# --------------------------------------------------------------------------

_ROLE_UTYPES = {
    "data.spectralaxis.value": "wave",
    "data.fluxaxis.value": "flux",
    "data.fluxaxis.accuracy.staterror": "error",
    "data.fluxaxis.quality": "quality",
}
_ROLE_NAMES = {
    "wave": ("WAVE", "WAVELENGTH", "LAMBDA", "WAVE_VAC", "WAVE_AIR"),
    "loglam": ("LOGLAM",),
    "flux": ("FLUX", "FLUX_REDUCED"),
    "error": ("ERR", "ERR_FLUX", "ERROR", "SIGMA", "FLUX_ERR", "ERR_REDUCED"),
    "ivar": ("IVAR", "INVVAR"),
    "quality": ("QUAL", "QUALITY"),
    "mask": ("MASK", "AND_MASK", "ANDMASK"),
}


def utype_role(utype):
    """Role of a column from its IVOA Spectrum utype, or None.

    Only the main axes count: ESO's ``eso:Data.FluxAxis.Value`` (a telluric
    corrected copy) and ``continuum:...`` are other products.
    """
    if not utype:
        return None
    text = utype.strip().lower()
    namespace = ""
    if ":" in text:
        namespace, text = text.split(":", 1)
    if namespace not in ("", "spec", "sdm", "spectrum"):
        return None
    if text.startswith("spectrum."):
        text = text[len("spectrum."):]
    return _ROLE_UTYPES.get(text)


def ucd_role(ucd):
    """Role of a column from its UCD, or None (em.wl, phot.flux.density...)."""
    if not ucd:
        return None
    words = [w.strip().lower() for w in ucd.split(";")]
    if words[0] == "em.wl":
        return "wave"
    if words[0].startswith("phot.flux.density") or words[0] == "phot.flux":
        return "flux"
    if words[0] == "stat.error" and any(w.startswith("phot.flux") for w in words):
        return "error"
    return None


def assign_roles(columns):
    """Map roles to column names from (name, utype, ucd) triples.

    Utypes win over UCDs, which win over conventional names.

    Parameters
    ----------
    columns : list of tuple
        ``(name, utype, ucd)`` per column, in file order.

    Returns
    -------
    dict
        Role ("wave", "loglam", "flux", "error", "ivar", "quality", "mask")
        to column name.
    """
    roles = {}
    for classify, position in ((utype_role, 1), (ucd_role, 2)):
        for column in columns:
            role = classify(column[position])
            if role and role not in roles:
                roles[role] = column[0]
    upper = {column[0].upper(): column[0] for column in columns}
    for role, names in _ROLE_NAMES.items():
        if role in roles or (role == "loglam" and "wave" in roles):
            continue
        for name in names:
            if name in upper:
                roles[role] = upper[name]
                break
    if "wave" in roles:
        roles.pop("loglam", None)
    return roles


def columns_upper(hdu):
    """Upper-cased column name -> the name as the FITS table spells it."""
    return {name.upper(): name for name in hdu.columns.names}
