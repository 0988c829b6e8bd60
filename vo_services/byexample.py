"""Search by example: upload a spectrum, get the archive's nearest spectra.

The upload is read by :func:`ingest.readers.read_spectra` (FITS layouts,
SDM VOTable, or a CSV with units in its header) and encoded by
:func:`ingest.pipeline.infer_batch` with the same models, grid, frame and
preprocessing as ingest, so a spectrum uploaded again lands on its own
vector.  Searches run in one latent space (``generic`` unless the request
names another, see ``retrspect.spaces``); the neighbours come from that
space's HNSW index.  For browsers each neighbour gets a plot of it
overlaid on the upload.
"""
from __future__ import annotations

import base64
import io
import os
import tempfile

import numpy as np

from retrspect.ingest.errors import ModelError, ReaderError, RetrspectError
from retrspect.ingest.contract import GENERIC_SPACE
from retrspect.vo_services.similarity import (OPERATORS, NoLatentError,
                                              NoSpaceError, VectorLiteralError,
                                              lookup_latent, model_of,
                                              parse_vector_literal,
                                              space_column, table_models,
                                              vector_sql)

#: uploads larger than this are refused before they are parsed (DaCHS
#: itself refuses request bodies beyond its [web]maxUploadSize with a 413)
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: most neighbours one request may ask for
MAX_K = 100


class UploadError(RetrspectError, ValueError):
    """An upload that cannot be searched with; the message says why."""


def encode_upload(data: bytes, filename: str = "upload",
                  space: str = GENERIC_SPACE):
    """(spectrum, vector in ``space``) of the first spectrum in an uploaded
    file.

    A spectrum that covers too little of the space's grid is refused with a
    message that says how much it covers, as ingest gives it no vector.
    """
    from retrspect.ingest.pipeline import infer_batch
    from retrspect.ingest.preprocess import coverage_shortfall
    from retrspect.ingest.readers import read_spectra

    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"upload of {len(data)} bytes exceeds the limit of "
                          f"{MAX_UPLOAD_BYTES} bytes")
    if not data:
        raise UploadError("the upload is empty")
    suffix = "".join(c for c in os.path.basename(filename)[-12:]
                     if c.isalnum() or c in "._-")
    with tempfile.NamedTemporaryFile(prefix="retrspect-upload-",
                                     suffix="-" + suffix) as stream:
        stream.write(data)
        stream.flush()
        try:
            spectra = read_spectra(stream.name)
        except ReaderError as err:
            raise UploadError(f"{filename}: {err.reason}") from None
    spectrum = spectra[0]
    try:
        space_column(space)
        models = table_models().select(space)
    except (NoSpaceError, ModelError) as err:
        raise UploadError(str(err)) from None
    model = model_of(space)
    outputs = infer_batch([spectrum], models)[model.key]
    refusal = coverage_shortfall(f"{filename}: the spectrum",
                                 float(outputs["grid_coverage"][0]),
                                 model.grid, model.min_coverage, model.frame)
    if refusal:
        raise UploadError(refusal)
    return spectrum, outputs[model.latent_output][0]


def archive_spectrum(identifier: str, space: str = GENERIC_SPACE):
    """(spectrum, vector in ``space``) of an archive spectrum named by
    pubDID or obs_id."""
    from gavo import base

    try:
        latent = lookup_latent(identifier, space)
    except (NoLatentError, NoSpaceError) as err:
        raise UploadError(str(err)) from None
    with base.getTableConn() as conn:
        row = next(conn.queryToDicts(
            "SELECT obs_id, source_file, source_index FROM retrspect.raw_data"
            " WHERE ssa_pubdid = %(id)s OR obs_id = %(id)s LIMIT 1",
            {"id": identifier}))
    return row_spectrum(row), np.asarray(latent)


def row_spectrum(row: dict):
    """The spectrum of a spectra-table row (obs_id, source_file,
    source_index), through the one mapping ingest and datalink use."""
    from gavo import base
    from retrspect.ingest.sources import spectrum_of_row
    return spectrum_of_row(base.getConfig("inputsDir"), row["source_file"],
                           row["source_index"], row["obs_id"])


def nearest(latent, k: int, space: str = GENERIC_SPACE) -> list[dict]:
    """The k archive spectra nearest to a vector of ``space``, nearest first."""
    from gavo import base
    try:
        column = space_column(space)
    except NoSpaceError as err:
        raise UploadError(str(err)) from None
    if not 1 <= k <= MAX_K:
        raise UploadError(f"k must be between 1 and {MAX_K}")
    try:
        query_vector = vector_sql(np.asarray(latent, dtype=float), column.dim)
    except VectorLiteralError as err:
        raise UploadError(f"the encoder gave no usable latent vector for "
                          f"this spectrum ({err})") from None
    with base.getTableConn() as conn:
        rows = list(conn.queryToDicts(
            f"SELECT v.obs_id, v.pubdid, v.latent {OPERATORS[column.metric]} "
            f"{query_vector} AS distance, s.ssa_targname, s.ssa_collection,"
            " m.ml_class, m.redshift, s.accref, s.datalink,"
            " s.source_file, s.source_index"
            f" FROM {column.table} AS v"
            " JOIN retrspect.raw_data AS s ON s.ssa_pubdid = v.pubdid"
            " LEFT JOIN retrspect.ml_results AS m ON m.pubdid = v.pubdid"
            " ORDER BY distance LIMIT %(k)s", {"k": int(k)}))
    return rows


def overlay_png(query, neighbour, title: str) -> str:
    """Base64 PNG of a neighbour (red) over the uploaded spectrum (black)."""
    from matplotlib import pyplot as plt

    from retrspect.ingest.plots import new_axes, served_xy

    fig, ax = new_axes(5.5, 1.9, 72)
    for spectrum, colour, label in ((query, "k", "upload"),
                                    (neighbour, "tab:red", "neighbour")):
        ax.plot(*served_xy(spectrum, normalise=True), lw=0.6, color=colour,
                label=label, alpha=0.8)
    ax.set_title(title, fontsize=8)
    ax.set_ylabel("flux / median", fontsize=7)
    ax.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return base64.b64encode(out.getvalue()).decode("ascii")


def run_core(core, input_table, query_meta):
    """The pythonCore of the byexample service: rows of the output table."""
    from gavo import base, rsc

    upload = input_table.getParam("spectrum")
    identifier = input_table.getParam("ID")
    k = input_table.getParam("k") or 10
    space = input_table.getParam("space") or GENERIC_SPACE
    try:
        space_column(space)
    except NoSpaceError as err:
        raise base.ValidationError(str(err), "space") from None
    latent_text = input_table.getParam("latent")
    if sum(map(bool, (upload, identifier, latent_text))) != 1:
        raise base.ValidationError("Give one of: a spectrum file, the ID of "
                                   "an archive spectrum, a latent vector", "spectrum")
    if latent_text:
        try:
            latent = parse_vector_literal(latent_text, space_column(space).dim)
            neighbours = nearest(latent, int(k), space)
        except (VectorLiteralError, UploadError) as err:
            raise base.ValidationError(str(err), "latent") from None
        return rsc.TableForDef(core.outputTable, rows=[
            _output_row(rank, row, None) for rank, row in enumerate(neighbours, start=1)])
    try:
        if upload:
            if not (isinstance(upload, tuple) and len(upload) == 2):
                raise UploadError("send the file as a DALI upload: "
                                  "UPLOAD=spectrum,param:f with the file in "
                                  "the multipart field f")
            filename, stream = upload
            query, latent = encode_upload(
                stream.read(MAX_UPLOAD_BYTES + 1), filename or "upload", space)
        else:
            query, latent = archive_spectrum(identifier, space)
        neighbours = nearest(latent, int(k), space)
    except ReaderError as err:  # an archive file changed under its row
        raise base.ValidationError(f"cannot serve this archive spectrum: "
                                   f"{err}", "ID") from None
    except UploadError as err:
        raise base.ValidationError(str(err),
                                   "spectrum" if upload else "ID") from None

    # plots only for the HTML form (the VOTable drops the plot column)
    want_plots = (str(query_meta.get("format")).upper() == "HTML"
                  or "__nevow_form__" in query_meta.ctxArgs)
    rows = []
    for rank, row in enumerate(neighbours, start=1):
        plot = None
        if want_plots:
            plot = overlay_png(query, row_spectrum(row),
                               f"{rank}. {row['obs_id']} "
                               f"(distance {row['distance']:.4f})")
        rows.append(_output_row(rank, row, plot))
    return rsc.TableForDef(core.outputTable, rows=rows)


def _output_row(rank: int, row: dict, plot: str | None) -> dict:
    from gavo.protocols import products
    return {"rank": rank, "obs_id": row["obs_id"], "pubdid": row["pubdid"],
            "dist": row["distance"], "ssa_targname": row["ssa_targname"],
            "ssa_collection": row["ssa_collection"], "ml_class": row["ml_class"],
            "redshift": row["redshift"],
            "access_url": products.makeProductLink(row["accref"]),
            "datalink": row["datalink"], "plot": plot}
