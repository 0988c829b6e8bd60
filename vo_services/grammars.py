"""The RD's grammars: DaCHS glue between the ingest pipeline and the tables.

``resdir/q.rd`` delegates its grammars here so that the RD stays declarative:

* :func:`iter_import_rows` and :func:`iter_reembed_rows` are the import and
  re-embedding grammars: they run :mod:`retrspect.ingest.pipeline` over new
  files (or spectra with stale ML results) and report what they skipped;
* :func:`iter_sdm_rows` turns one SSA row back into the spectrum's data
  points for the datalink service (SDM VOTable / FITS), through
  :func:`retrspect.ingest.sources.spectrum_of_row`.

Broken files raise :class:`retrspect.ingest.errors.ReaderError` in the
readers; they are reported with the file's name and reason and skipped, so
the rest of the batch lands.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from retrspect.ingest import pipeline
from retrspect.ingest.sources import served_arrays, spectrum_of_row
from retrspect.vo_services.similarity import latent_column, table_models


def _inputs_dir() -> str:
    from gavo import base
    return base.getConfig("inputsDir")


def _report_skip(message: str) -> None:
    from gavo import base
    base.ui.notifyWarning(message)


# --------------------------------------------- the RD's import grammars ----

def _table_info(rd) -> dict:
    """What the ingest needs to know of the RD's tables."""
    column = latent_column(rd)
    return {"latent_dim": column.dim, "latent_metric": column.metric,
            "raw": rd.getById("raw_data").getQName(), "ml": column.table}


def table_exists(qualified_name: str) -> bool:
    """Whether a table or view exists in DaCHS's database."""
    from gavo import base
    with base.getTableConn() as conn:
        return bool(list(conn.query("SELECT to_regclass(%(name)s)",
                                    {"name": qualified_name}))[0][0])


def _query(sql: str, params: dict | None = None) -> list[tuple]:
    from gavo import base
    with base.getTableConn() as conn:
        return list(conn.query(sql, params or {}))


def _finish(summary) -> None:
    """Report skipped files to DaCHS's UI and the summary to stderr."""
    for source_file, reason in summary.skipped:
        _report_skip(f"Skipped {source_file}: {reason}")
    print(summary.report(), file=sys.stderr)


def iter_import_rows(rd) -> Iterator[dict]:
    """Rows (spectra metadata and ML results) for every new source file.

    New means under ``<resdir>/data/<collection>/`` and not yet in the
    table, so a second run reads nothing it has read before.
    """
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
    if not re.fullmatch(r"[A-Za-z0-9._-]+", text):
        raise ValueError(f"unexpected model id {text!r}")
    return f"'{text}'"


def current_model_ids(rd) -> dict[str, str]:
    """kind -> model id of the built-in models ingest would run now (the
    generic space's table, ml_results)."""
    if not pipeline.IngestOptions.from_environment().use_models:
        return {}
    return {kind: model.model_id
            for kind, model in table_models(rd).builtin.items()}


def space_model_id(rd, space: str) -> str | None:
    """The model id a plug-in space's vectors must have now (None: models
    switched off)."""
    if not pipeline.IngestOptions.from_environment().use_models:
        return None
    return table_models(rd).select(space).models[space].model_id


def _space_store(rd, space: str) -> str:
    """The table holding every spectrum a plug-in space's model has seen."""
    return rd.getById(f"space_{space}_all").getQName()


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
    info = _table_info(rd)
    model_ids = current_model_ids(rd)
    if not model_ids:
        return
    yield from _rows_of(rd, f"SELECT r.obs_id, r.source_file "
                        f"{unembedded_spectra(info['raw'], info['ml'], model_ids)}",
                        only="generic")


def iter_space_reembed_rows(rd, space: str) -> Iterator[dict]:
    """Rows of one plug-in space for every spectrum its current model has
    not seen (new model version, or a new space); the stale ones are
    deleted in the same transaction (the RD's ``reembed_<space>``)."""
    model_id = space_model_id(rd, space)
    if model_id is None:
        return
    raw = rd.getById("raw_data").getQName()
    yield from _rows_of(
        rd, f"SELECT r.obs_id, r.source_file FROM {raw} AS r LEFT JOIN "
            f"{_space_store(rd, space)} AS s ON s.pubdid = r.ssa_pubdid "
            f"WHERE s.pubdid IS NULL OR s.model IS DISTINCT FROM "
            f"{_sql_literal(model_id)}", only=space)


def delete_stale_space_rows(table, space: str) -> None:
    """In a space's re-embedding transaction: drop vectors of other models,
    and of spectra no longer in the archive."""
    rd = table.tableDef.rd
    model_id = space_model_id(rd, space)
    if model_id is not None:
        raw = rd.getById("raw_data").getQName()
        table.connection.execute(
            f"DELETE FROM {_space_store(rd, space)} AS s WHERE s.model IS "
            f"DISTINCT FROM {_sql_literal(model_id)} OR NOT EXISTS (SELECT 1 "
            f"FROM {raw} AS r WHERE r.ssa_pubdid = s.pubdid)")


def _rows_of(rd, stale_sql: str, only: str) -> Iterator[dict]:
    """Rows, made by the models of ``only``, for the spectra (obs_id,
    source_file) the query finds; other spectra of their files are read but
    not returned."""
    info = _table_info(rd)
    stale = _query(stale_sql)
    wanted = {obs_id for obs_id, _ in stale}
    inputs_dir = _inputs_dir()
    paths = sorted({os.path.join(inputs_dir, f) for _, f in stale})
    options = pipeline.IngestOptions.from_environment(
        latent_dim=info["latent_dim"], latent_metric=info["latent_metric"],
        only=only)
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
