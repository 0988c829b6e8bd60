"""The spectra table's row of one spectrum: SSAP metadata and bookkeeping.

Ingest workers make these rows (:mod:`retrspect.ingest.pipeline`); DaCHS
writes them through the RD's grammar (:mod:`retrspect.vo_services.grammars`).
Nothing here imports DaCHS.
"""
from __future__ import annotations

import os
import warnings

from astropy import units as u

from retrspect.ingest.preprocess import vacuum_wavelength
from retrspect.ingest.spectrum import Spectrum, estimate_snr

#: accrefs (and hence publisher DIDs) are "retrspect/<obs_id>"
ACCREF_PREFIX = "retrspect/"
#: inputs-relative directory of the precomputed preview PNGs
PREVIEW_DIR = "retrspect/previews"
#: aperture assumed for spectra with a position (degrees); slit/fibre scale
DEFAULT_APERTURE_DEG = 1.0 / 3600.0


def flux_unit_string(flux: u.Quantity) -> str:
    """The VOUnit string of a flux, empty for relative (dimensionless) fluxes."""
    if flux.unit == u.dimensionless_unscaled:
        return ""
    # erg and Angstrom are valid VOUnits that astropy calls deprecated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        return flux.unit.to_string("vounit")


def raw_row(spectrum: Spectrum, source_file: str) -> dict:
    """The ``raw_data`` row for one spectrum read from ``source_file``.

    The collection is the library's (for bundled spectra) or else the name
    of the folder the file was staged in (``data/<collection>/``).
    Wavelength bounds are in metres (SSAP convention) and in vacuum, the
    medium the archive serves; the SNR is estimated from the data.
    """
    meta = spectrum.meta
    obs_id = meta["obs_id"]
    wave = vacuum_wavelength(spectrum).to_value(u.AA)
    good = wave[~spectrum.mask]
    mid = 0.5 * (good[0] + good[-1])
    resolving_power = meta.get("resolving_power")
    fluxunit = flux_unit_string(spectrum.flux)
    target = meta.get("target_name") or obs_id
    collection = (meta.get("collection")
                  or os.path.basename(os.path.dirname(source_file)))
    return {
        "obs_id": obs_id,
        "accref": ACCREF_PREFIX + obs_id,
        "source_file": source_file,
        "source_index": spectrum.index,
        "ssa_dstitle": f"{collection} {target}",
        "ssa_targname": target,
        "ssa_targclass": meta.get("object_class"),
        "ssa_redshift": meta.get("redshift"),
        "ssa_snr": float(estimate_snr(spectrum)),
        "ssa_dateObs": meta.get("date_obs"),
        "ssa_length": int(len(wave)),
        "ssa_specstart": float(good[0]) * 1e-10,
        "ssa_specend": float(good[-1]) * 1e-10,
        "ssa_specres": (mid / resolving_power * 1e-10
                        if resolving_power else None),
        "ssa_collection": collection,
        "ssa_fluxunit": fluxunit,
        "ssa_fluxcalib": "ABSOLUTE" if fluxunit else "RELATIVE",
        "ssa_instrument": meta.get("instrument"),
        "ra": meta.get("ra"),
        "dec": meta.get("dec"),
        "aperture": DEFAULT_APERTURE_DEG,
        "air_wavelengths": spectrum.medium == "air",
        "resolving_power": resolving_power,
        "teff": meta.get("teff"),
        "logg": meta.get("logg"),
        "feh": meta.get("feh"),
        "mk_type": meta.get("mk_type"),
        "rv_catalogue": meta.get("rv"),
        "preview": f"{PREVIEW_DIR}/{obs_id}.png",
        # estimated size of the SDM VOTable served for this spectrum
        "sdm_size": 10000 + 60 * len(wave),
    }
