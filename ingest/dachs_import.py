"""Rows for DaCHS: the bridge between the readers and the resource descriptor.

``resdir/q.rd`` delegates its grammars here so that the RD stays declarative
and this logic is testable without a running import:

* :func:`raw_row` makes the ``raw_data`` row of one spectrum (SSAP
  metadata, published labels, product bookkeeping);
* :func:`iter_import_rows` and :func:`iter_reembed_rows` are the import and
  re-embedding grammars: they run :mod:`ingest.pipeline` over new files (or
  spectra with stale ML results) and report what they skipped;
* :func:`iter_sdm_rows` turns one SSA row back into the spectrum's data
  points for the datalink service (SDM VOTable / FITS), through
  :func:`ingest.sources.spectrum_of_row`.

Broken files raise :class:`ingest.spectrum.ReaderError` in the readers; they
are reported with the file's name and reason and skipped, so the rest of the
batch lands.
"""
from __future__ import annotations

import os
import warnings
from typing import Iterator

import numpy as np
from astropy import units as u

from ingest.preprocess import vacuum_wavelength
from ingest.sources import served_arrays, spectrum_of_row
from ingest.spectrum import Spectrum, estimate_snr

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


# --------------------------------------------- the RD's import grammars ----

def _table_info(rd) -> dict:
    """What the ingest needs to know of the RD's ML table."""
    table = rd.getById("ml_results")
    latent = table.getColumnByName("latent")
    dim = int(latent.type.split("(")[1].rstrip(")"))
    return {"latent_dim": dim,
            "latent_metric": table.getProperty("latentMetric"),
            "raw": rd.getById("raw_data").getQName(),
            "ml": table.getQName()}


def _query(sql: str, params: dict | None = None) -> list[tuple]:
    from gavo import base
    with base.getTableConn() as conn:
        return list(conn.query(sql, params or {}))


def _finish(summary) -> None:
    """Report skipped files to DaCHS's UI and the summary to stderr."""
    import sys
    for source_file, reason in summary.skipped:
        _report_skip(f"Skipped {source_file}: {reason}")
    print(summary.report(), file=sys.stderr)


def iter_import_rows(rd) -> Iterator[dict]:
    """Rows (spectra metadata and ML results) for every new source file.

    New means under ``<resdir>/data/<collection>/`` and not yet in the
    table, so a second run reads nothing it has read before.
    """
    from pathlib import Path
    from ingest import pipeline
    from vo_services.server import table_exists

    info = _table_info(rd)
    inputs_dir = _inputs_dir()

    def known() -> set[str]:
        if not table_exists(info["raw"]):
            return set()
        return {r[0] for r in _query(
            f"SELECT DISTINCT source_file FROM {info['raw']}")}

    paths = pipeline.new_source_files(Path(rd.resdir) / "data", known,
                                      inputs_dir)
    options = pipeline.IngestOptions.from_environment(
        latent_dim=info["latent_dim"], latent_metric=info["latent_metric"])
    summary = pipeline.IngestSummary()
    yield from pipeline.run(paths, inputs_dir, options, summary)
    _finish(summary)


def stale_condition(model_ids: dict[str, str], ml: str = "ml") -> str:
    """SQL that is true for ML rows not made by exactly these models, or
    written before "no answer" was stored as NULL instead of NaN, or before
    the grid coverage was recorded."""
    column = {"vae": "latent_model", "classifier": "class_model",
              "velocity": "velocity_model"}
    parts = [f"{ml}.{column[kind]} IS DISTINCT FROM {_sql_literal(model_id)}"
             for kind, model_id in sorted(model_ids.items())]
    if parts:
        parts += [f"{ml}.{name} = 'NaN'" for name in ("anomaly", "redshift")]
    if "vae" in model_ids:
        parts.append(f"{ml}.grid_coverage IS NULL")
    return " OR ".join(parts) or "FALSE"


def unembedded_spectra(raw: str, ml: str, model_ids: dict[str, str]) -> str:
    """FROM/WHERE of the spectra (``r``) lacking results of these models."""
    return (f"FROM {raw} AS r LEFT JOIN {ml} AS ml ON ml.pubdid = r.ssa_pubdid "
            f"WHERE ml.pubdid IS NULL OR {stale_condition(model_ids)}")


def _sql_literal(text: str) -> str:
    """Quote a model id (made of [A-Za-z0-9._-] by construction) for SQL."""
    import re
    if not re.fullmatch(r"[A-Za-z0-9._-]+", text):
        raise ValueError(f"unexpected model id {text!r}")
    return f"'{text}'"


def current_model_ids(rd) -> dict[str, str]:
    """kind -> model id of the models ingest would run now."""
    from ingest.infer import ModelSet
    from ingest.pipeline import IngestOptions
    options = IngestOptions.from_environment()
    if not options.use_models:
        return {}
    info = _table_info(rd)
    models = ModelSet.load(options.model_dir, latent_dim=info["latent_dim"],
                           latent_metric=info["latent_metric"])
    return {kind: model.model_id for kind, model in models.models.items()}


def delete_stale_results(table, rd) -> None:
    """In the re-embedding transaction: drop results of other model versions."""
    info = _table_info(rd)
    table.connection.execute(
        f"DELETE FROM {info['ml']} AS ml WHERE "
        f"{stale_condition(current_model_ids(rd))}")


def iter_reembed_rows(rd) -> Iterator[dict]:
    """ML rows for every spectrum whose results are missing or were made by
    other model versions.

    The stale rows are deleted in the same transaction (see the RD's
    ``reembed`` data), so TAP users see the old or the new results, never
    a mixture.
    """
    from ingest import pipeline

    info = _table_info(rd)
    model_ids = current_model_ids(rd)
    if not model_ids:
        return
    stale = _query(f"SELECT r.obs_id, r.source_file "
                   f"{unembedded_spectra(info['raw'], info['ml'], model_ids)}")
    wanted = {obs_id for obs_id, _ in stale}
    inputs_dir = _inputs_dir()
    paths = sorted({os.path.join(inputs_dir, f) for _, f in stale})
    options = pipeline.IngestOptions.from_environment(
        latent_dim=info["latent_dim"], latent_metric=info["latent_metric"])
    summary = pipeline.IngestSummary()
    for row in pipeline.run(paths, inputs_dir, options, summary):
        if row["obs_id"] in wanted:
            yield row
    _finish(summary)


def iter_sdm_rows(ssa_row: dict, inputs_dir: str | None = None
                  ) -> Iterator[dict]:
    """Data points of the spectrum an SSA row describes (for datalink)."""
    spectrum = spectrum_of_row(inputs_dir or _inputs_dir(),
                               ssa_row["source_file"], ssa_row["source_index"],
                               ssa_row["obs_id"])
    arrays = served_arrays(spectrum)
    for spectral, flux, error in zip(arrays["spectral"], arrays["flux"],
                                     arrays["flux_error"]):
        yield {"spectral": float(spectral),
               "flux": None if np.isnan(flux) else float(flux),
               "flux_error": None if np.isnan(error) else float(error)}
