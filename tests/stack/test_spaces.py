"""The latent spaces are discoverable from TAP (issue 14, first part): the
table ``retrspect.spaces`` says where each space's vectors are and what they
are, and its counts are the vectors actually published."""
from __future__ import annotations

import numpy as np


def test_the_generic_space_is_listed_with_its_model_and_counts(tap, db, sql):
    from retrspect.ingest.infer import DEFAULT_MODEL_DIR, load_model
    from retrspect.ingest.preprocess import MIN_GRID_COVERAGE

    rows = tap.search("SELECT * FROM retrspect.spaces").to_table()
    assert list(rows["space_name"]) == ["generic"]
    row = rows[0]
    vae = load_model(sorted(DEFAULT_MODEL_DIR.glob("vae-*.onnx"))[0])
    assert (row["model"], row["version"]) == (vae.model_id, vae.version)
    assert (row["metric"], int(row["dimension"])) == (vae.metric, vae.latent_dim)
    assert int(row["npix"]) == vae.grid.npix
    np.testing.assert_allclose([row["wave_min"], row["wave_max"]],
                               [vae.grid.wavelength[0], vae.grid.wavelength[-1]], atol=1e-3)
    assert float(row["min_coverage"]) == MIN_GRID_COVERAGE
    # the counts are the published vectors, and the column named holds them
    table, column = str(row["vector_table"]), str(row["vector_column"])
    embedded, missing = sql(db, f"SELECT count({column}), count(*) - count({column}) "
                                f"FROM {table}")[0]
    assert (int(row["n_vectors"]), int(row["n_not_covered"])) == (embedded, missing)
    assert embedded > 1200 and missing > 0
    dims = sql(db, f"SELECT DISTINCT vector_dims({column}) FROM {table} "
                   f"WHERE {column} IS NOT NULL")
    assert dims == [(int(row["dimension"]),)]


def test_the_spaces_table_is_in_tap_schema(tap):
    columns = tap.search("SELECT column_name, unit FROM TAP_SCHEMA.columns "
                         "WHERE table_name = 'retrspect.spaces'").to_table()
    names = set(columns["column_name"])
    assert {"space_name", "vector_table", "vector_column", "metric", "dimension",
            "wave_min", "wave_max", "n_vectors"} <= names
    units = dict(zip(columns["column_name"], columns["unit"]))
    assert units["wave_min"] == "Angstrom"
