"""Latent spaces (issue 14) on the running archive: two spaces published,
each searchable through TAP, search by example, the pyvo helper and
datalink, its vectors those of its own ONNX model, and no row for a
spectrum that does not cover its grid."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io.votable import parse_single_table

from retrspect.vo_services.client import nearest_spectra

PLUGIN = "pca_blue"


def shipped_spaces() -> list[str]:
    """generic and the plug-in spaces of the shipped model files."""
    from retrspect.ingest.infer import model_dir_from_environment, ModelSet
    return ["generic", *sorted(ModelSet.load(model_dir_from_environment()).spaces)]
QUERIES = ("miles_m0028", "stelib_hd005820", "manga_test_spectra_0")


@pytest.fixture(scope="module")
def installed():
    """Space name -> the installed model that makes its vectors."""
    from retrspect.ingest.infer import model_dir_from_environment, ModelSet
    models = ModelSet.load(model_dir_from_environment())
    return {"generic": models.models["vae"], PLUGIN: models.models[PLUGIN]}


@pytest.fixture(scope="module")
def spaces(tap):
    rows = tap.search("SELECT * FROM retrspect.spaces").to_table()
    return {str(row["space_name"]): row for row in rows}


def test_the_spaces_are_listed_with_their_models_grids_and_counts(
        spaces, installed, db, sql):
    assert sorted(spaces) == shipped_spaces() and PLUGIN in spaces
    for name, model in installed.items():
        row = spaces[name]
        assert (row["model"], row["version"]) == (model.model_id, model.version)
        assert (row["metric"], int(row["dimension"])) == (model.metric,
                                                          model.latent_dim)
        assert (str(row["frame"]), str(row["medium"])) == (model.frame, "vacuum")
        assert int(row["npix"]) == model.grid.npix
        np.testing.assert_allclose([row["wave_min"], row["wave_max"]],
                                   [model.grid.wavelength[0],
                                    model.grid.wavelength[-1]], atol=1e-3)
        assert float(row["min_coverage"]) == pytest.approx(model.min_coverage)
        # the counts are the published vectors of the table named
        table, column = str(row["vector_table"]), str(row["vector_column"])
        (published,) = sql(db, f"SELECT count({column}) FROM {table}")[0]
        assert int(row["n_vectors"]) == published > 1000
        dims = sql(db, f"SELECT DISTINCT vector_dims({column}) FROM {table} "
                       f"WHERE {column} IS NOT NULL")
        assert dims == [(model.latent_dim,)]
    assert spaces["generic"]["vector_table"] == "retrspect.ml_results"
    assert spaces[PLUGIN]["vector_table"] == f"retrspect.space_{PLUGIN}"
    assert (spaces[PLUGIN]["frame"], int(spaces[PLUGIN]["dimension"])) == ("rest", 16)
    # every spectrum is seen by each space: embedded or not covered
    (spectra,) = sql(db, "SELECT count(*) FROM retrspect.raw_data")[0]
    for row in spaces.values():
        assert int(row["n_vectors"]) + int(row["n_not_covered"]) == spectra


def test_each_space_has_its_card_served(spaces):
    import requests
    for name, row in spaces.items():
        text = requests.get(str(row["card"]), timeout=30).text
        assert str(row["model"]).split("-")[0] in text or name == "generic"
    assert PLUGIN in requests.get(str(spaces[PLUGIN]["card"]), timeout=30).text


def test_space_tables_are_in_tap_schema_with_output_units_and_ucds(tap):
    columns = tap.search(
        "SELECT column_name, datatype, arraysize, ucd FROM TAP_SCHEMA.columns "
        f"WHERE table_name = 'retrspect.space_{PLUGIN}'").to_table()
    info = {str(r["column_name"]): r for r in columns}
    assert {"pubdid", "obs_id", "latent", "grid_coverage", "model",
            "residual"} == set(info)
    assert (info["latent"]["datatype"], str(info["latent"]["arraysize"])) == ("float", "16")
    assert info["residual"]["ucd"] == "stat.fit.residual"
    tables = set(tap.search("SELECT table_name FROM TAP_SCHEMA.tables WHERE "
                            "table_name LIKE 'retrspect.space%'").to_table()["table_name"])
    # the store of every spectrum seen (NULL vectors included) is not in TAP
    assert tables == {f"retrspect.space_{name}" for name in shipped_spaces()[1:]} | {
        "retrspect.spaces"}


def _published(db, sql, table: str) -> tuple[list[str], np.ndarray]:
    rows = sql(db, f"SELECT obs_id, latent FROM {table} WHERE latent IS NOT NULL "
                   "ORDER BY obs_id")
    return [r[0] for r in rows], np.array([np.asarray(r[1]) for r in rows])


@pytest.mark.parametrize("space", ["generic", PLUGIN])
def test_tap_knn_equals_exact_search_over_the_published_vectors(
        space, spaces, tap, db, sql):
    table = str(spaces[space]["vector_table"])
    ids, vectors = _published(db, sql, table)
    for query in QUERIES[:2]:
        served = tap.search(
            f"SELECT TOP 10 obs_id, gavo_spectrum_distance(latent, '{query}') "
            f"AS d FROM {table} ORDER BY d").to_table()
        distance = np.linalg.norm(vectors - vectors[ids.index(query)], axis=1)
        order = np.argsort(distance, kind="stable")[:10]
        assert list(served["obs_id"]) == [ids[i] for i in order]
        np.testing.assert_allclose(served["d"], distance[order], rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("space", ["generic", PLUGIN])
def test_every_vector_is_reachable_through_the_hnsw_index(space, spaces, db):
    """Each published vector, searched with itself through the space's HNSW
    index (sequential scans off), comes back first: no vector is lost to
    the approximate graph, outliers included."""
    table = str(spaces[space]["vector_table"])
    with db.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(f"SELECT obs_id, latent::text FROM {table} "
                       "WHERE latent IS NOT NULL")
        rows = cursor.fetchall()
        cursor.execute(f"EXPLAIN SELECT obs_id FROM {table} ORDER BY "
                       "latent <-> %s::vector LIMIT 1", (rows[0][1],))
        assert "hnsw" in " ".join(r[0] for r in cursor.fetchall())
        lost = []
        for obs_id, vector in rows:
            cursor.execute(f"SELECT obs_id, latent <-> %(v)s::vector FROM {table} "
                           "ORDER BY latent <-> %(v)s::vector LIMIT 2", {"v": vector})
            found = cursor.fetchall()
            if obs_id not in [o for o, d in found if d == 0]:
                lost.append(obs_id)
        cursor.execute("RESET enable_seqscan")
    assert len(rows) > 1000 and lost == []


def test_plugin_vectors_equal_its_onnx_model_run_on_the_files(
        installed, tap, db, sql):
    """The published pca_blue vectors and residuals against the ONNX file run
    by hand on the spectra read from their files, in their rest frame (the
    published redshift), a MaNGA galaxy among them."""
    import onnxruntime as ort
    from retrspect.ingest import preprocess
    from retrspect.ingest.sources import spectrum_of_row

    model = installed[PLUGIN]
    rows = sql(db, "SELECT r.obs_id, r.source_file, r.source_index, m.redshift "
                   "FROM retrspect.raw_data AS r JOIN retrspect.ml_results AS m "
                   "ON m.pubdid = r.ssa_pubdid WHERE r.obs_id IN %(ids)s "
                   "ORDER BY r.obs_id", {"ids": QUERIES})
    assert len(rows) == 3
    spectra = [spectrum_of_row("/var/gavo/inputs", f, i, obs_id)
               for obs_id, f, i, _ in rows]
    z = np.array([r[3] for r in rows], dtype=float)
    assert z[[r[0] for r in rows].index("manga_test_spectra_0")] > 0.01
    flux, weight = preprocess.prepare_batch(spectra, model.grid, z)
    session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    latent, residual = session.run(["latent", "residual"],
                                   {"flux": flux, "weight": weight})
    served = {str(r["obs_id"]): r for r in tap.search(
        f"SELECT obs_id, latent, residual, grid_coverage, model FROM "
        f"retrspect.space_{PLUGIN} WHERE obs_id IN "
        f"({', '.join(repr(q) for q in QUERIES)})").to_table()}
    for i, (obs_id, *_rest) in enumerate(rows):
        row = served[obs_id]
        assert row["model"] == model.model_id
        np.testing.assert_allclose(np.asarray(row["latent"]), latent[i],
                                   rtol=1e-4, atol=1e-6)
        assert float(row["residual"]) == pytest.approx(float(residual[i]), rel=1e-4)
        assert float(row["grid_coverage"]) == pytest.approx(np.mean(weight[i] > 0))
    # in the observed frame the galaxy's vector would be another one
    observed = session.run(["latent"], dict(zip(
        ("flux", "weight"), preprocess.prepare_batch(spectra, model.grid))))[0]
    galaxy = [r[0] for r in rows].index("manga_test_spectra_0")
    assert np.linalg.norm(observed[galaxy] - latent[galaxy]) > 1e-2


def test_spectra_below_a_space_coverage_have_no_row_in_it(installed, db, sql, tap):
    """Seen but not covered: a row in the hidden store with its coverage,
    none in the TAP table; and the coverage is the file's own."""
    model = installed[PLUGIN]
    store = sql(db, f"SELECT obs_id, grid_coverage, latent IS NULL FROM "
                    f"retrspect.space_{PLUGIN}_all")
    uncovered = {o for o, c, _ in store if c < model.min_coverage}
    assert uncovered and all(no_vector for o, c, no_vector in store
                             if o in uncovered)
    published = {str(o) for o in tap.search(
        f"SELECT obs_id FROM retrspect.space_{PLUGIN}").to_table()["obs_id"]}
    assert published == {o for o, _, _ in store} - uncovered
    # a rest-frame space needs the measured redshift: a spectrum without one
    # covers nothing of it
    no_z = {r[0] for r in sql(db, "SELECT obs_id FROM retrspect.ml_results "
                                  "WHERE redshift IS NULL")}
    assert no_z and no_z <= uncovered
    assert all(c == 0 for o, c, _ in store if o in no_z)
    # generic: a spectrum below its coverage has no vector (NULL latent)
    (covered_nulls,) = sql(db, "SELECT count(*) FROM retrspect.ml_results WHERE "
                               "latent IS NULL AND grid_coverage >= 0.5")[0]
    assert covered_nulls == 0


def test_plugin_space_is_searchable_from_pyvo_and_by_example(base_url, tap):
    import requests
    by_helper = nearest_spectra(base_url, "miles_m0028", k=5, space=PLUGIN)
    by_tap = tap.search(
        "SELECT TOP 5 obs_id, gavo_spectrum_distance(latent, 'miles_m0028') AS d "
        f"FROM retrspect.space_{PLUGIN} ORDER BY d").to_table()
    assert list(by_helper["obs_id"]) == list(by_tap["obs_id"])
    generic = nearest_spectra(base_url, "miles_m0028", k=5)
    assert list(generic["obs_id"]) != list(by_helper["obs_id"])
    votable = parse_single_table(io.BytesIO(requests.get(
        f"{base_url}/retrspect/q/byexample/api",
        params={"ID": "miles_m0028", "k": 5, "space": PLUGIN}, timeout=60).content)).to_table()
    assert list(votable["obs_id"]) == list(by_tap["obs_id"])
    with pytest.raises(ValueError, match="no latent space 'nope' in this archive; it has "
                       + ", ".join(shipped_spaces())):
        nearest_spectra(base_url, "miles_m0028", space="nope")


def test_a_spectrum_outside_a_space_is_refused_with_its_coverage(base_url, db, sql):
    import requests
    obs_id = sql(db, "SELECT obs_id FROM retrspect.ml_results WHERE "
                     "redshift IS NULL ORDER BY obs_id LIMIT 1")[0][0]
    text = requests.get(f"{base_url}/retrspect/q/byexample/api",
                        params={"ID": obs_id, "space": PLUGIN}, timeout=60).text
    assert "QUERY_STATUS" in text and "rest frame" in text and "90%" in text
    text = requests.get(f"{base_url}/retrspect/q/byexample/api",
                        params={"ID": "miles_m0028", "space": "nope"}, timeout=60).text
    assert "QUERY_STATUS" in text and "nope" in text


def test_distances_across_spaces_are_refused(tap):
    import pyvo
    with pytest.raises(pyvo.dal.DALQueryError, match="different latent spaces"):
        tap.search("SELECT TOP 1 gavo_latent_distance(m.latent, p.latent) FROM "
                   f"retrspect.ml_results AS m JOIN retrspect.space_{PLUGIN} AS p "
                   "ON p.pubdid = m.pubdid")
    with pytest.raises(pyvo.dal.DALQueryError, match="16 dimensions"):
        tap.search("SELECT TOP 1 gavo_latent_distance(latent, '[1, 2]') FROM "
                   f"retrspect.space_{PLUGIN}")


def test_a_contract_breaking_model_is_refused_before_anything_is_written(
        tmp_path, write_space_model, db, sql):
    """`retrspect import` with a models directory holding a broken file stops
    before any DaCHS command, naming the file and the field."""
    from retrspect.ingest.infer import model_dir_from_environment
    directory = tmp_path / "models"
    directory.mkdir()
    for path in model_dir_from_environment().glob("*.onnx"):
        shutil.copy(path, directory)
    broken = write_space_model(directory, metadata={"outputs": json.dumps(
        {"latent": {"role": "latent", "metric": "l2"}, "level": {"role": "flux"}})})
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path)], check=True)
    before = sql(db, "SELECT count(*), max(latent_model) FROM retrspect.ml_results")
    result = subprocess.run([str(Path(sys.executable).parent / "retrspect"), "import",
                             "--model-dir", str(directory)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    assert broken.name in result.stderr
    assert "retrspect.outputs entry 'level' has role 'flux'" in result.stderr
    assert "Making data" not in result.stdout + result.stderr
    assert sql(db, "SELECT count(*), max(latent_model) FROM retrspect.ml_results") == before



def test_a_space_dropped_in_is_published_and_removed_without_code(
        write_space_model, tap, base_url, db, sql):
    """A third-party file copied into the models directory becomes a TAP
    table (in TAP_SCHEMA, queryable through the server, in
    retrspect.spaces) at the next `retrspect import`; removed, it is gone
    from all three at the next one."""
    import pyvo
    from retrspect.ingest.infer import model_dir_from_environment
    from retrspect.ingest.preprocess import MODEL_GRID

    command = [str(Path(sys.executable).parent / "retrspect"), "import"]
    path = write_space_model(model_dir_from_environment(), space="third", dim=6,
                             grid=MODEL_GRID)
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=900)
        listed = tap.search("SELECT space_name, n_vectors FROM retrspect.spaces "
                            "WHERE space_name = 'third'").to_table()
        assert len(listed) == 1 and int(listed["n_vectors"][0]) > 1200
        columns = tap.search("SELECT column_name, unit, ucd FROM TAP_SCHEMA.columns "
                             "WHERE table_name = 'retrspect.space_third'").to_table()
        assert {"latent", "level", "p_blue", "p_red"} <= set(columns["column_name"])
        rows = tap.search("SELECT TOP 3 obs_id, gavo_spectrum_distance(latent, "
                          "'miles_m0028') AS d FROM retrspect.space_third "
                          "ORDER BY d").to_table()
        assert rows["obs_id"][0] == "miles_m0028" and rows["d"][0] == 0
        assert nearest_spectra(base_url, "miles_m0028", k=1,
                               space="third")["obs_id"][0] == "miles_m0028"
    finally:
        path.unlink()
        subprocess.run(command, check=True, capture_output=True, timeout=900)
    assert tap.search("SELECT space_name FROM retrspect.spaces").to_table()[
        "space_name"].tolist() == shipped_spaces()
    assert len(tap.search("SELECT * FROM TAP_SCHEMA.columns WHERE table_name "
                          "= 'retrspect.space_third'").to_table()) == 0
    with pytest.raises(pyvo.dal.DALQueryError, match="space_third"):
        tap.search("SELECT TOP 1 * FROM retrspect.space_third")
    assert sql(db, "SELECT to_regclass('retrspect.space_third_all')") == [(None,)]
