"""The latent spaces the archive publishes, and the RD parts they need.

A space is an encoder's vectors on one grid, searchable with the gavo_
distance functions.  ``generic`` is the shipped VAE's latent, in
``ml_results.latent``.  Every other space is a plug-in: an ONNX file of
kind ``space`` under ``models/CONTRACT.md`` dropped into the models
directory.  For each, ``resdir/q.rd`` generates (with DaCHS's LOOP, from
:func:`loop_items` and :func:`output_columns`, read whenever the RD is
loaded) a table per space, so the RD is never edited by hand:

* ``space_<name>_all`` (hidden): one row per spectrum the model saw, its
  grid coverage and model, the vector NULL when it covers too little;
* ``space_<name>`` (TAP): a view of the spectra that have a vector, with an
  HNSW index of its own (through the table under it);
* the rowmaker and the ``reembed_<name>`` data that re-embeds that space
  alone, in one transaction.

A table per space, not one table with partial indexes: a pgvector index is
over one column type, so a shared table needs expression indexes with casts
(``(vec::vector(16))``) that DaCHS's ADQL cannot emit, so its queries would
not use them; a table per space also carries its own TAP metadata (unit,
UCD and description per output) and can be swapped alone.

``retrspect.spaces`` (a view over ``space_models``, which ``retrspect
import`` writes from the installed models) lists every space with its
grid, metric, dimension, model, card and live counts.
"""
from __future__ import annotations

from pathlib import Path

from retrspect.ingest.contract import GENERIC_SPACE, METRICS, SPACE_KIND

#: the pgvector operator class of each metric, for the HNSW indexes
OPCLASSES = {"l2": "vector_l2_ops", "cosine": "vector_cosine_ops"}
assert set(OPCLASSES) == set(METRICS)


def plugin_models() -> dict:
    """The installed plug-in spaces by name, as their files describe them.

    Read whenever DaCHS parses the RD (from the files' metadata, without
    inference sessions): a file that breaks the contract is left out with
    a warning, so the archive keeps serving; ``retrspect import`` and
    ``retrspect check`` refuse it by name.
    """
    from retrspect.ingest.infer import installed_descriptions
    return {key: d for key, d in installed_descriptions().items()
            if d.kind == SPACE_KIND}


def _plain(text: str) -> str:
    """Text safe inside the RD's generated elements (no macro escapes)."""
    return " ".join(str(text).replace("\\", "/").split())


def card_path(name: str) -> Path:
    """Where a space's model card is: ``cards/<name>.md`` in the models
    directory (``vae.md`` for generic)."""
    from retrspect.ingest.infer import model_dir_from_environment
    stem = "vae" if name == GENERIC_SPACE else name
    return Path(model_dir_from_environment()) / "cards" / f"{stem}.md"


def card_summary(name: str) -> str | None:
    """The first paragraph after a card's title (None: no card)."""
    try:
        text = card_path(name).read_text(encoding="utf-8")
    except OSError:
        return None
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    body = [p for p in paragraphs if not p.lstrip().startswith("#")]
    return _plain(body[0]) if body else None


def describe(model) -> str:
    """A plug-in space's description: its card's summary, and what its
    model says of itself."""
    grid = model.grid
    facts = (f"Latent space {model.key}: vectors of {model.model_id}, "
             f"{model.latent_dim} dimensions for {model.metric} distance, from "
             f"spectra on {grid.describe()} in the {model.frame} frame, given to "
             f"spectra covering at least {model.min_coverage:.0%} of it; trained "
             f"on {model.metadata.get('training_data', 'n/a')}.")
    summary = card_summary(model.key)
    return _plain(f"{summary} {facts}" if summary else facts)


def loop_items():
    """One LOOP item per plug-in space: what the RD's generated tables,
    rowmaker and data need (see the module docstring)."""
    for name, model in sorted(plugin_models().items()):
        yield {"space": name, "dim": str(model.latent_dim),
               "metric": model.metric, "opclass": OPCLASSES[model.metric],
               "description": describe(model),
               "model_key": f"{name}__model", "latent_key": f"{name}__latent",
               "coverage_key": f"{name}__grid_coverage"}


def names():
    """LOOP items naming every space, generic first (the byexample
    service's choices)."""
    yield {"space": GENERIC_SPACE}
    for item in loop_items():
        yield {"space": item["space"]}


def output_columns(space: str):
    """One LOOP item per column a space's outputs fill besides ``latent``
    (class probabilities, scalars), with unit, UCD and description."""
    model = plugin_models()[space]
    for spec in model.output_specs:
        if spec.role == "probabilities":
            for column, label in zip(spec.columns, spec.labels):
                yield {"column": column, "key": f"{space}__{column}", "unit": "",
                       "ucd": "stat.probability",
                       "description": _plain(f"Probability of class {label} "
                                             f"({spec.name} of {model.model_id}).")}
        elif spec.role == "scalar":
            yield {"column": spec.name, "key": f"{space}__{spec.name}",
                   "unit": spec.unit, "ucd": spec.ucd,
                   "description": _plain(spec.description or spec.name)}


def counts_sql() -> str:
    """The live counts of every space, as SQL for the ``spaces`` view:
    vectors, and spectra seen that cover too little of the grid."""
    parts = [f"SELECT '{GENERIC_SPACE}' AS space_name, count(latent) AS n_vectors, "
             "count(*) - count(latent) AS n_not_covered FROM \\schema.ml_results"]
    parts += [f"SELECT '{name}', count(latent), count(*) - count(latent) "
              f"FROM \\schema.space_{name}_all" for name in sorted(plugin_models())]
    return " UNION ALL ".join(parts)


def card_url(rd, name: str) -> str | None:
    """The URL of a space's model card (deploy links ``resdir/cards`` to the
    models directory's cards), when there is one."""
    from gavo.base import makeAbsoluteURL
    path = card_path(name)
    if not path.is_file():
        return None
    return makeAbsoluteURL(f"{rd.sourceId}/cards/static/{path.name}")


def space_rows(rd) -> list[dict]:
    """One row of ``space_models`` per published space; the view
    ``spaces`` adds the counts, live."""
    from retrspect.vo_services.similarity import space_columns, table_models
    models = table_models(rd).models
    rows = []
    for name, column in sorted(space_columns(rd).items()):
        model = models.get("vae" if name == GENERIC_SPACE else name)
        if model is None:
            continue
        grid = model.grid
        description = (f"Latent means of the variational autoencoder "
                       f"{model.model_id}, trained on "
                       f"{model.metadata.get('training_data', 'n/a')}"
                       if name == GENERIC_SPACE else describe(model))
        rows.append({
            "space_name": name, "description": description,
            "model": model.model_id, "version": model.version,
            "vector_table": column.table, "vector_column": column.column,
            "metric": model.metric, "dimension": model.latent_dim,
            "wave_min": round(float(grid.wavelength[0]), 3),
            "wave_max": round(float(grid.wavelength[-1]), 3),
            "npix": grid.npix,
            "resolving_power": (None if grid.resolving_power is None
                                else float(grid.resolving_power)),
            "medium": model.medium, "frame": model.frame,
            "min_coverage": model.min_coverage, "card": card_url(rd, name),
        })
    return rows


def outdated_tables(rd) -> list[str]:
    """Plug-in space tables in the database (with their views) that the
    RD no longer declares, or declares with other columns (a model of
    another dimension or other outputs): ``retrspect import`` drops them
    before it imports, and re-embeds the space into the new table."""
    from gavo import base
    with base.getTableConn() as conn:
        rows = list(conn.query(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
            "FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "JOIN pg_attribute AS a ON a.attrelid = c.oid "
            "WHERE n.nspname = %(schema)s AND c.relkind = 'r' "
            "AND c.relname LIKE 'space\\_%%\\_all' AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY c.relname, a.attnum",
            {"schema": rd.schema}))
    existing: dict[str, list] = {}
    for table, column, column_type in rows:
        existing.setdefault(table, []).append((column, column_type))
    declared = {table.id: [(c.name, c.type) for c in table.columns]
                for table in rd.tables
                if table.id.startswith("space_") and table.id.endswith("_all")}
    outdated = []
    for table, columns in sorted(existing.items()):
        if declared.get(table) != columns:
            outdated += [f"{rd.schema}.{table[:-len('_all')]}", f"{rd.schema}.{table}"]
    return outdated


def spaces_of(pubdid: str) -> list[str]:
    """The spaces in which a spectrum has a vector, generic first."""
    from gavo import base
    from retrspect.vo_services.similarity import space_columns
    columns = space_columns()
    order = sorted(columns, key=lambda name: (name != GENERIC_SPACE, name))
    # names and tables come from the RD; the identifier is a parameter
    sql = " UNION ALL ".join(
        f"SELECT {i} FROM {columns[name].table} WHERE pubdid = %(id)s "
        "AND latent IS NOT NULL" for i, name in enumerate(order))
    with base.getTableConn() as conn:
        found = {row[0] for row in conn.query(sql, {"id": pubdid})}
    return [name for i, name in enumerate(order) if i in found]


def similar_links(descriptor, rd_id: str, k: int = 10):
    """Datalink rows: the ``k`` spectra most similar to this one, per
    space it has a vector in (search by example, as a VOTable)."""
    from urllib.parse import urlencode
    from gavo.base import makeAbsoluteURL
    for name in spaces_of(descriptor.pubDID):
        yield descriptor.makeLink(
            makeAbsoluteURL(f"{rd_id}/byexample/api?" + urlencode(
                {"ID": descriptor.pubDID, "k": k, "space": name})),
            description=f"The {k} spectra most similar to this one in the "
                        f"latent space {name} (nearest neighbours; see "
                        "retrspect.spaces)",
            contentType="application/x-votable+xml")
