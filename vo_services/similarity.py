"""Nearest-spectrum search in ADQL: user functions backed by pgvector.

The functions translate into plain pgvector distance operators on the
``latent`` column of a latent space's table (``retrspect.ml_results`` for
``generic``, ``retrspect.space_<name>`` for a plug-in space) so that
``SELECT TOP k ... ORDER BY gavo_spectrum_distance(latent, 'id')`` becomes
``ORDER BY latent <-> '[...]'::vector(n) LIMIT k``, which PostgreSQL answers
from that space's HNSW index.  The space comes from the column: its table
says which space it holds (the RD's ``space`` property).  The vector of a
spectrum named by its identifier is looked up in that space once, when the
query is translated, and enters the SQL as a vector literal that this
module formats from floats itself: nothing a user writes reaches SQL
unquoted.

DaCHS imports this module (through :mod:`vo_services.dachs_hook`) in every
process that parses ADQL.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from retrspect.ingest.contract import GENERIC_SPACE, METRICS as OPERATORS
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


class NoSpaceError(RetrspectError, LookupError):
    """A latent space name this archive does not have."""


class NoLatentError(RetrspectError, LookupError):
    """A spectrum named by a user that has no latent vector; str() says why
    (no such spectrum, or too little of the model grid covered)."""


@dataclass(frozen=True)
class SpaceColumn:
    """Where a latent space's vectors are, and what they are."""

    space: str
    table: str        # what TAP users query (only spectra with a vector)
    store: str        # every spectrum the model has seen (coverage kept)
    dim: int
    metric: str
    column: str = "latent"


def space_columns(rd=None) -> dict[str, SpaceColumn]:
    """Every latent space of the RD (``rd``, or retrspect's own, read once
    per process): tables with a ``space`` property hold one."""
    if rd is None:
        return _own_space_columns()
    found = {}
    for table in rd.tables:
        space = table.getProperty("space", None)
        if space is None:
            continue
        column_type = table.getColumnByName("latent").type
        dim = int(re.fullmatch(r"vector\((\d+)\)", column_type).group(1))
        store = (table.getQName() if space == GENERIC_SPACE
                 else rd.getById(f"space_{space}_all").getQName())
        found[space] = SpaceColumn(space, table.getQName(), store, dim,
                                   table.getProperty("latentMetric"))
    return found


def space_column(space: str = GENERIC_SPACE, rd=None) -> SpaceColumn:
    """One space's column.

    Raises
    ------
    NoSpaceError
    """
    spaces = space_columns(rd)
    if space not in spaces:
        raise NoSpaceError(f"No latent space {space!r}; this archive has "
                           f"{', '.join(sorted(spaces))} (see retrspect.spaces)")
    return spaces[space]


def latent_column(rd=None) -> SpaceColumn:
    """The generic space's column (``ml_results.latent``)."""
    return space_column(GENERIC_SPACE, rd)


def _own_space_columns() -> dict[str, SpaceColumn]:
    # not cached here: DaCHS caches the RD and re-reads it on a reload,
    # which is when spaces come and go
    from gavo import api
    return space_columns(api.getRD(RD_ID))


def space_of_table(qualified_name: str) -> SpaceColumn | None:
    """The space whose vectors a TAP table holds (None: no space's)."""
    for column in space_columns().values():
        if column.table.lower() == qualified_name.lower():
            return column
    return None


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


def model_of(space: str):
    """The installed model making a space's vectors."""
    models = table_models().models
    return models["vae" if space == GENERIC_SPACE else space]


def lookup_latent(identifier: str, space: str = GENERIC_SPACE) -> list[float]:
    """The vector of a spectrum named by publisher DID or obs_id in a space.

    Raises
    ------
    NoLatentError
        No spectrum has this identifier, or it covers too little of the
        space's grid to have a vector there.
    NoSpaceError
    """
    from gavo import base
    from retrspect.ingest.preprocess import coverage_shortfall
    column = space_column(space)
    with base.getTableConn() as conn:
        rows = list(conn.query(
            f"SELECT latent, grid_coverage FROM {column.store} "
            "WHERE pubdid = %(id)s OR obs_id = %(id)s LIMIT 1",
            {"id": identifier}))
    if not rows:
        raise NoLatentError(
            f"No spectrum {identifier!r} with a vector in the latent space "
            f"{space!r} ({column.store}); give a publisher DID (ivo://...) or "
            "an obs_id as in retrspect.spectra")
    latent, coverage = rows[0]
    if latent is None:
        model = model_of(space)
        raise NoLatentError(coverage_shortfall(
            f"Spectrum {identifier!r}", coverage or 0.0, model.grid,
            model.min_coverage, model.frame) or
            f"Spectrum {identifier!r} has no vector in {space!r}")
    return [float(v) for v in latent]


def expand_functions_after_annotation() -> None:
    """Let a user function return a callable that makes its SQL when the
    query is serialised, after DaCHS has annotated the tree.

    DaCHS 2.7 calls a user function while it parses, before it knows which
    table a column comes from; the distance functions need that to know a
    column's latent space (its dimension, metric and vectors).
    """
    from gavo.adql.ufunctions import UserFunction

    original = UserFunction.flatten
    if getattr(original, "late_bound", False):
        return

    def flatten(self):
        expression = self.processedExpression
        return expression() if callable(expression) else original(self)

    flatten.late_bound = True
    UserFunction.flatten = flatten


def register_adql_functions() -> None:
    """Register the gavo_ nearest-spectrum functions with DaCHS."""
    from gavo.adql import common, nodes
    from gavo.adql.ufunctions import getStringLiteral, userFunction

    expand_functions_after_annotation()

    def column_space(node) -> SpaceColumn | None:
        """The space of a vector column argument (None: not a column of a
        space's table, e.g. a literal)."""
        field = getattr(node, "fieldInfo", None)
        for column in getattr(field, "userData", None) or ():
            table = getattr(column, "parent", None)
            if table is not None and hasattr(table, "getQName"):
                found = space_of_table(table.getQName())
                if found is not None:
                    return found
        return None

    def space_for(name, args) -> SpaceColumn:
        """The space of a call: from its column argument(s), else generic."""
        found = {s.space: s for s in map(column_space, args) if s is not None}
        if len(found) > 1:
            raise common.UfuncError(
                f"{name}: the arguments are vectors of different latent "
                f"spaces ({', '.join(sorted(found))}); distances are only "
                "defined within one space")
        return next(iter(found.values()), None) or latent_column()

    def operand(node, what: str, column: SpaceColumn) -> str:
        """SQL for a latent argument: a vector column or a vector literal."""
        if getattr(node, "type", None) == "characterStringLiteral":
            try:
                return vector_sql(parse_vector_literal(node.value, column.dim),
                                  column.dim)
            except VectorLiteralError as err:
                raise common.UfuncError(f"{what}: {err} (space "
                                        f"{column.space!r})") from None
        field = getattr(node, "fieldInfo", None)
        sql_type = getattr(field, "type", "") or ""
        if sql_type.startswith("vector("):
            # a bare vector column: keep it bare so the HNSW index applies
            return nodes.flatten(node)
        return f"({nodes.flatten(node)})::vector({column.dim})"

    def spectrum_operand(node, column: SpaceColumn) -> str:
        identifier = getStringLiteral(
            node, "The spectrum identifier (publisher DID or obs_id)"
        ).replace("''", "'")  # DaCHS keeps ADQL's doubled quotes
        try:
            latent = lookup_latent(identifier, column.space)
        except (NoLatentError, NoSpaceError) as err:
            raise common.UfuncError(str(err)) from None
        return vector_sql(latent, column.dim)

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

        def metric_of(column: SpaceColumn) -> str:
            return metric or column.metric

        @userFunction(
            f"gavo_latent_{suffix}",
            "(latent1 REAL[], latent2 REAL[]) -> DOUBLE PRECISION",
            f"""
            {doc} between two latent vectors of one space.  Each argument
            is the latent column of a space's table (retrspect.ml_results
            for generic, retrspect.space_NAME for the others; see
            retrspect.spaces) or a vector literal such as '[0.1, -0.3, ...]'
            or '0.1 -0.3 ...' with one number per dimension of the space.
            """, "double precision", ucd="stat.value")
        def _latent(args):
            name = f"gavo_latent_{suffix}"
            two_arguments(name, args)

            def sql() -> str:
                column = space_for(name, args)
                return distance(metric_of(column),
                                operand(args[0], "first argument", column),
                                operand(args[1], "second argument", column))
            return sql

        @userFunction(
            f"gavo_spectrum_{suffix}",
            "(latent REAL[], spectrum TEXT) -> DOUBLE PRECISION",
            f"""
            {doc} from a latent vector (usually the latent column of a
            space's table: retrspect.ml_results for generic,
            retrspect.space_NAME for the others) to the vector, in the same
            space, of the spectrum named by its publisher DID (ivo://...) or
            obs_id (e.g. 'miles_m0028').
            """, "double precision", ucd="stat.value")
        def _spectrum(args):
            name = f"gavo_spectrum_{suffix}"
            two_arguments(name, args)

            def sql() -> str:
                column = space_for(name, args[:1])
                return distance(metric_of(column),
                                operand(args[0], "first argument", column),
                                spectrum_operand(args[1], column))
            return sql

    make_pair("distance", None,
              f"Distance, in {trained} (retrspect.spaces.metric; "
              "SELECT TOP k ... ORDER BY it is answered from the space's HNSW "
              "index),")
    make_pair("euclidean", "l2", described["l2"] + " (exact when the "
              "latent space was trained for another metric)")
    make_pair("cosine", "cosine", described["cosine"] + " (exact when the "
              "latent space was trained for another metric)")
