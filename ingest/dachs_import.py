"""Rows for DaCHS: the bridge between the readers and the resource descriptor.

``resdir/q.rd`` delegates its grammars here so that the RD stays declarative
and this logic is testable without a running import:

* :func:`iter_raw_rows` turns one source file into rows of ``raw_data``
  (SSAP metadata, published labels, product bookkeeping);
* :func:`iter_sdm_rows` turns one SSA row back into the spectrum's data
  points for the datalink service (SDM VOTable / FITS).

Broken files raise :class:`ingest.spectrum.ReaderError` in the readers; here
they are reported with the file's name and reason and skipped, so the rest
of the batch lands.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Iterator

import numpy as np
from astropy import units as u

from ingest import bundled
from ingest.preprocess import vacuum_wavelength
from ingest.readers import read_spectra
from ingest.spectrum import ReaderError, Spectrum, estimate_snr

#: accrefs (and hence publisher DIDs) are "retrspect/<obs_id>"
ACCREF_PREFIX = "retrspect/"
#: inputs-relative directory of the precomputed preview PNGs
PREVIEW_DIR = "retrspect/previews"
#: aperture assumed for spectra with a position (degrees); slit/fibre scale
DEFAULT_APERTURE_DEG = 1.0 / 3600.0


def _inputs_dir() -> str:
    from gavo import base
    return base.getConfig("inputsDir")


def _report_skip(message: str) -> None:
    from gavo import base
    base.ui.notifyWarning(message)


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


def read_source(source_path: str) -> list[Spectrum]:
    """All spectra in one staged source file, with library metadata added.

    Staged files are symlinks into the packages that ship them; reading the
    resolved path lets :func:`ingest.bundled.enrich` recognise the library.
    """
    spectra = read_spectra(os.path.realpath(source_path))
    for spectrum in spectra:
        bundled.enrich(spectrum)
    return spectra


def iter_raw_rows(source_path: str,
                  report: Callable[[str], None] | None = None,
                  inputs_dir: str | None = None) -> Iterator[dict]:
    """Rows of ``raw_data`` for every spectrum in one source file.

    A file the readers refuse is reported (file and reason) and yields
    nothing; the import goes on with the next file.
    """
    inputs_dir = inputs_dir or _inputs_dir()
    report = report or _report_skip
    source_file = os.path.relpath(source_path, inputs_dir)
    try:
        spectra = read_source(source_path)
    except ReaderError as err:
        report(f"Skipped {source_file}: {err.reason}")
        return
    for spectrum in spectra:
        yield raw_row(spectrum, source_file)


def sdm_arrays(spectrum: Spectrum) -> dict[str, np.ndarray]:
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


def iter_sdm_rows(ssa_row: dict, inputs_dir: str | None = None
                  ) -> Iterator[dict]:
    """Data points of the spectrum an SSA row describes (for datalink)."""
    inputs_dir = inputs_dir or _inputs_dir()
    path = os.path.join(inputs_dir, ssa_row["source_file"])
    spectra = read_source(path)
    arrays = sdm_arrays(spectra[ssa_row["source_index"]])
    for spectral, flux, error in zip(arrays["spectral"], arrays["flux"],
                                     arrays["flux_error"]):
        yield {"spectral": float(spectral),
               "flux": None if np.isnan(flux) else float(flux),
               "flux_error": None if np.isnan(error) else float(error)}
