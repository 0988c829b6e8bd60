"""Nearest-spectrum search in ADQL: user functions backed by pgvector.

The functions translate into plain pgvector distance operators on the
``latent`` column of ``retrspect.ml_results`` so that
``SELECT TOP k ... ORDER BY gavo_spectrum_distance(latent, 'id')`` becomes
``ORDER BY latent <=> '[...]'::vector(n) LIMIT k``, which PostgreSQL answers
from the HNSW index.  The latent of a spectrum named by its identifier is
looked up once, when the query is translated, and enters the SQL as a
vector literal that this module formats from floats itself: nothing a user
writes reaches SQL unquoted.

DaCHS imports this module (through :mod:`vo_services.dachs_hook`) in every
process that parses ADQL.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from retrspect.ingest.contract import METRICS as OPERATORS
from retrspect.ingest.errors import RetrspectError

#: the RD (also what ``dachs imp`` is given) and its table of latents
RD_ID = "retrspect/q"
TABLE_ID = "ml_results"
#: at most this many characters of a vector literal are parsed
MAX_LITERAL_LENGTH = 20000
#: pgvector stores float32: larger magnitudes do not fit
FLOAT32_MAX = 3.4028234663852886e38


class VectorLiteralError(RetrspectError, ValueError):
    """A vector written in a query that is not a usable latent vector."""


class NoLatentError(RetrspectError, LookupError):
    """A spectrum named by a user that has no latent vector; str() says why
    (no such spectrum, or too little of the model grid covered)."""


@dataclass(frozen=True)
class LatentColumn:
    """What the functions need to know of the table's latent column."""

    table: str
    dim: int
    metric: str


def latent_column(rd=None) -> LatentColumn:
    """The latent column's table, dimension and trained metric, from the
    RD (``rd``, or retrspect's own, read once per process)."""
    if rd is None:
        return _own_latent_column()
    table = rd.getById(TABLE_ID)
    column_type = table.getColumnByName("latent").type
    dim = int(re.fullmatch(r"vector\((\d+)\)", column_type).group(1))
    return LatentColumn(table.getQName(), dim, table.getProperty("latentMetric"))


@lru_cache(maxsize=1)
def _own_latent_column() -> LatentColumn:
    from gavo import api
    return latent_column(api.getRD(RD_ID))


def parse_vector_literal(text: str, dim: int) -> list[float]:
    """Floats of a vector written as '[1, 2, 3]' or DALI-style '1 2 3'.

    Raises
    ------
    VectorLiteralError
        When the text is not ``dim`` finite numbers.
    """
    if len(text) > MAX_LITERAL_LENGTH:
        raise VectorLiteralError(f"vector literal longer than "
                                 f"{MAX_LITERAL_LENGTH} characters")
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    items = [item for item in re.split(r"[\s,]+", body) if item]
    try:
        values = [float(item) for item in items]
    except ValueError:
        raise VectorLiteralError(
            f"not a vector of numbers: {text[:80]!r}") from None
    _check_values(values, dim)
    return values


def _check_values(values, dim: int) -> None:
    if len(values) != dim:
        raise VectorLiteralError(f"vector has {len(values)} elements; the "
                                 f"latent space has {dim} dimensions")
    if not all(math.isfinite(v) for v in values):
        raise VectorLiteralError("vector elements must be finite numbers")
    if any(abs(v) > FLOAT32_MAX for v in values):
        raise VectorLiteralError("vector elements must fit in 32-bit floats "
                                 f"(|x| <= {FLOAT32_MAX:.7g})")


def vector_sql(values, dim: int) -> str:
    """A pgvector literal made from floats (repr: no user text inside).

    Raises
    ------
    VectorLiteralError
        Not ``dim`` finite float32 numbers.
    """
    values = [float(v) for v in values]
    _check_values(values, dim)
    return "'[" + ",".join(repr(v) for v in values) + f"]'::vector({dim})"


def table_models(rd=None):
    """The models whose results fill the latent table (see
    :func:`retrspect.ingest.infer.models_for_table`)."""
    from retrspect.ingest.infer import models_for_table
    column = latent_column(rd)
    return models_for_table(column.dim, column.metric)


def lookup_latent(identifier: str) -> list[float]:
    """The latent vector of a spectrum named by publisher DID or obs_id.

    Raises
    ------
    NoLatentError
        No spectrum has this identifier, or it covers too little of the
        model grid to have a latent vector.
    """
    from gavo import base
    from retrspect.ingest.preprocess import coverage_shortfall
    column = latent_column()
    with base.getTableConn() as conn:
        rows = list(conn.query(
            f"SELECT latent, grid_coverage FROM {column.table} "
            "WHERE pubdid = %(id)s OR obs_id = %(id)s LIMIT 1",
            {"id": identifier}))
    if not rows:
        raise NoLatentError(
            f"No spectrum {identifier!r} with a latent vector in "
            f"{column.table}; give a publisher DID (ivo://...) or an obs_id "
            "as in retrspect.spectra")
    latent, coverage = rows[0]
    if latent is None:
        grid = table_models().models["vae"].grid
        raise NoLatentError(coverage_shortfall(
            f"Spectrum {identifier!r}", coverage or 0.0, grid) or
            f"Spectrum {identifier!r} has no latent vector")
    return [float(v) for v in latent]


def register_adql_functions() -> None:
    """Register the gavo_ nearest-spectrum functions with DaCHS."""
    from gavo.adql import common, nodes
    from gavo.adql.ufunctions import getStringLiteral, userFunction

    def operand(node, what: str) -> str:
        """SQL for a latent argument: a vector column or a vector literal."""
        column = latent_column()
        if getattr(node, "type", None) == "characterStringLiteral":
            try:
                return vector_sql(parse_vector_literal(node.value, column.dim),
                                  column.dim)
            except VectorLiteralError as err:
                raise common.UfuncError(f"{what}: {err}") from None
        field = getattr(node, "fieldInfo", None)
        sql_type = getattr(field, "type", "") or ""
        if sql_type.startswith("vector("):
            # a bare vector column: keep it bare so the HNSW index applies
            return nodes.flatten(node)
        return f"({nodes.flatten(node)})::vector({column.dim})"

    def spectrum_operand(node) -> str:
        identifier = getStringLiteral(
            node, "The spectrum identifier (publisher DID or obs_id)"
        ).replace("''", "'")  # DaCHS keeps ADQL's doubled quotes
        try:
            latent = lookup_latent(identifier)
        except NoLatentError as err:
            raise common.UfuncError(str(err)) from None
        return vector_sql(latent, latent_column().dim)

    def distance(metric: str, left: str, right: str) -> str:
        return f"({left} {OPERATORS[metric]} {right})"

    def two_arguments(name, args):
        if len(args) != 2:
            raise common.UfuncError(f"{name} takes exactly two arguments")

    trained = "the metric the latent space was trained for"
    described = {"l2": "Euclidean (L2) distance", "cosine": "cosine distance "
                 "(1 - cos of the angle, 0 to 2)"}

    def make_pair(suffix: str, metric: str | None, doc: str) -> None:
        """gavo_latent_<suffix> and gavo_spectrum_<suffix> for one metric
        (None: the trained metric, which the HNSW index serves)."""

        def metric_now() -> str:
            return metric or latent_column().metric

        @userFunction(
            f"gavo_latent_{suffix}",
            "(latent1 REAL[], latent2 REAL[]) -> DOUBLE PRECISION",
            f"""
            {doc} between two latent vectors.  Each argument is a latent
            column (retrspect.ml_results.latent) or a vector literal such as
            '[0.1, -0.3, ...]' or '0.1 -0.3 ...' with one number per latent
            dimension.
            """, "double precision", ucd="stat.value")
        def _latent(args):
            two_arguments(f"gavo_latent_{suffix}", args)
            return distance(metric_now(), operand(args[0], "first argument"),
                            operand(args[1], "second argument"))

        @userFunction(
            f"gavo_spectrum_{suffix}",
            "(latent REAL[], spectrum TEXT) -> DOUBLE PRECISION",
            f"""
            {doc} from a latent vector (usually the latent column of
            retrspect.ml_results) to the latent of the spectrum named by its
            publisher DID (ivo://...) or obs_id (e.g. 'miles_m0028').
            """, "double precision", ucd="stat.value")
        def _spectrum(args):
            two_arguments(f"gavo_spectrum_{suffix}", args)
            return distance(metric_now(), operand(args[0], "first argument"),
                            spectrum_operand(args[1]))

    make_pair("distance", None,
              f"Distance, in {trained} (Euclidean for retrspect's VAE; "
              "SELECT TOP k ... ORDER BY it is answered from the HNSW "
              "index),")
    make_pair("euclidean", "l2", described["l2"] + " (exact when the "
              "latent space was trained for another metric)")
    make_pair("cosine", "cosine", described["cosine"] + " (exact when the "
              "latent space was trained for another metric)")
