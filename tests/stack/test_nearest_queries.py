"""Nearest-spectrum search through TAP: the gavo_ ADQL functions on pgvector.

Checked with pyvo against the running server: results against an exact
numpy kNN over the same latents, the async path, the capabilities, bad and
hostile arguments, and the query plans PostgreSQL uses.
"""
from __future__ import annotations

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy import units as u


QUERY_ID = "miles_m0028"
UDFS = tuple(f"gavo_{kind}_{metric}" for kind in ("latent", "spectrum")
             for metric in ("distance", "euclidean", "cosine"))


def _vector(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def _distance(matrix: np.ndarray, query: np.ndarray, metric: str
              ) -> np.ndarray:
    if metric == "cosine":
        return 1 - matrix @ query / (np.linalg.norm(matrix, axis=1)
                                     * np.linalg.norm(query))
    return np.linalg.norm(matrix - query, axis=1)


def _trained_metric() -> str:
    from retrspect.vo_services.similarity import latent_column
    return latent_column().metric


@pytest.fixture(scope="module")
def all_latents(tap):
    table = tap.search(
        "SELECT m.obs_id, m.latent, m.ml_class, m.snr, s.ssa_collection, "
        "s.ssa_location FROM retrspect.ml_results AS m "
        "JOIN retrspect.spectra AS s ON s.ssa_pubdid = m.pubdid",
        maxrec=100000).to_table()
    assert len(table) >= 1250
    return table


def _exact_knn(table, query, k, mask=None):
    latents = np.vstack([_vector(v) for v in table["latent"]])
    distance = _distance(latents, query, _trained_metric())
    if mask is not None:
        distance = np.where(mask, distance, np.inf)
    order = np.argsort(distance)[:k]
    return [table["obs_id"][i] for i in order if np.isfinite(distance[i])], \
        distance[order]


def test_capabilities_list_the_functions(tap):
    features = tap.get_tap_capability().get_adql().get_feature_list(
        "ivo://ivoa.net/std/TAPRegExt#features-udf")
    forms = {f.form.split("(")[0]: f for f in features}
    for name in UDFS:
        assert name in forms, sorted(forms)
        assert forms[name].description.strip()


def test_neighbours_equal_exact_numpy_knn(tap, all_latents):
    query = _vector(all_latents["latent"][
        list(all_latents["obs_id"]).index(QUERY_ID)])
    expected, distances = _exact_knn(all_latents, query, 10)
    result = tap.search(
        "SELECT TOP 10 obs_id, gavo_spectrum_distance(latent, "
        f"'{QUERY_ID}') AS d FROM retrspect.ml_results ORDER BY d").to_table()
    assert list(result["obs_id"]) == expected
    assert result["obs_id"][0] == QUERY_ID
    np.testing.assert_allclose(result["d"], distances, atol=1e-5)


def test_vector_literal_and_pubdid_agree(tap, all_latents):
    """A vector literal, a publisher DID and an obs_id name the same point."""
    query = all_latents["latent"][list(all_latents["obs_id"]).index(QUERY_ID)]
    literal = "[" + ",".join(repr(float(v)) for v in query) + "]"
    by_literal = tap.search(
        "SELECT TOP 5 obs_id FROM retrspect.ml_results ORDER BY "
        f"gavo_latent_distance(latent, '{literal}')").to_table()
    by_did = tap.search(
        "SELECT TOP 5 obs_id FROM retrspect.ml_results ORDER BY "
        "gavo_spectrum_distance(latent, "
        f"'ivo://retrspect.example/~?retrspect/{QUERY_ID}')").to_table()
    assert list(by_literal["obs_id"]) == list(by_did["obs_id"])


@pytest.mark.parametrize("name, metric", [("euclidean", "l2"),
                                          ("cosine", "cosine")])
def test_explicit_metrics(tap, all_latents, name, metric):
    latents = np.vstack([_vector(v) for v in all_latents["latent"]])
    query = latents[list(all_latents["obs_id"]).index(QUERY_ID)]
    distance = _distance(latents, query, metric)
    expected = [all_latents["obs_id"][i] for i in np.argsort(distance)[:5]]
    result = tap.search(
        "SELECT TOP 5 obs_id, "
        f"gavo_spectrum_{name}(latent, '{QUERY_ID}') AS d "
        "FROM retrspect.ml_results ORDER BY d").to_table()
    assert list(result["obs_id"]) == expected
    np.testing.assert_allclose(result["d"], np.sort(distance)[:5], atol=1e-4)


def test_async_knn(tap):
    adql = ("SELECT TOP 10 obs_id FROM retrspect.ml_results ORDER BY "
            f"gavo_spectrum_distance(latent, '{QUERY_ID}')")
    sync = tap.search(adql).to_table()
    job = tap.submit_job(adql)
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=120)
    job.raise_if_error()
    assert list(job.fetch_result().to_table()["obs_id"]) == list(sync["obs_id"])
    job.delete()


@pytest.mark.parametrize("where, mask", [
    ("s.ssa_collection = 'STELIB'",
     lambda t: np.asarray(t["ssa_collection"]) == "STELIB"),
    ("m.snr > 50", lambda t: np.asarray(t["snr"], float) > 50),
    ("m.ml_class = '{common_class}'",
     lambda t: np.asarray(t["ml_class"]) == _most_common_class(t)),
    ("1 = CONTAINS(s.ssa_location, CIRCLE('ICRS', 80, 20, 60))",
     lambda t: _in_cone(t, 80, 20, 60)),
])
def test_filtered_knn_returns_k_rows_with_recall(tap, all_latents, where, mask):
    query = _vector(all_latents["latent"][
        list(all_latents["obs_id"]).index(QUERY_ID)])
    selected = mask(all_latents)
    k = min(10, int(selected.sum()))
    assert k >= 3, f"filter {where!r} selects too little to test"
    expected, _ = _exact_knn(all_latents, query, k, selected)
    where = where.format(common_class=_most_common_class(all_latents))
    result = tap.search(
        f"SELECT TOP {k} m.obs_id FROM retrspect.ml_results AS m "
        "JOIN retrspect.spectra AS s ON s.ssa_pubdid = m.pubdid "
        f"WHERE {where} ORDER BY gavo_spectrum_distance(m.latent, "
        f"'{QUERY_ID}')").to_table()
    assert len(result) == k
    recall = len(set(result["obs_id"]) & set(expected)) / k
    assert recall >= 0.95


def _most_common_class(table) -> str:
    classes, counts = np.unique(np.asarray(table["ml_class"]),
                                return_counts=True)
    return str(classes[np.argmax(counts)])


def _in_cone(table, ra, dec, radius):
    centre = SkyCoord(ra * u.deg, dec * u.deg)
    inside = []
    for location in table["ssa_location"]:
        if np.ma.is_masked(location) or not np.all(np.isfinite(location)):
            inside.append(False)
            continue
        lon, lat = (float(v) for v in location)
        inside.append(SkyCoord(lon * u.deg, lat * u.deg)
                      .separation(centre) < radius * u.deg)
    return np.array(inside)


@pytest.mark.parametrize("argument, message", [
    ("'no_such_spectrum'", "No spectrum 'no_such_spectrum'"),
    ("'x'' OR ''1''=''1'", "No spectrum"),
    ("'miles_m0028''; DROP TABLE retrspect.ml_results; --'", "No spectrum"),
])
def test_unknown_and_hostile_identifiers(tap, db, argument, message, sql):
    import pyvo
    before = sql(db, "SELECT COUNT(*) FROM retrspect.ml_results")[0][0]
    with pytest.raises(pyvo.dal.DALQueryError, match=message):
        tap.search("SELECT TOP 3 obs_id FROM retrspect.ml_results ORDER BY "
                   f"gavo_spectrum_distance(latent, {argument})")
    assert sql(db, "SELECT COUNT(*) FROM retrspect.ml_results")[0][0] == before


@pytest.mark.parametrize("literal, message", [
    ("'[1, 2, 3]'", "has 3 elements"),
    ("'[1, 2); DROP TABLE retrspect.ml_results; --'", "not a vector"),
    ("'" + " ".join(["nan"] * 32) + "'", "finite"),
    ("'" + "1 " * 20000 + "'", "longer than"),
])
def test_bad_vector_literals(tap, literal, message):
    import pyvo
    with pytest.raises(pyvo.dal.DALQueryError, match=message):
        tap.search("SELECT TOP 3 obs_id FROM retrspect.ml_results ORDER BY "
                   f"gavo_latent_distance(latent, {literal})")


def test_spectrum_identifier_must_be_a_literal(tap):
    import pyvo
    with pytest.raises(pyvo.dal.DALQueryError, match="constant string literal"):
        tap.search("SELECT TOP 3 obs_id FROM retrspect.ml_results ORDER BY "
                   "gavo_spectrum_distance(latent, obs_id)")


# --------------------------------------------------------- query plans ----

def _explain(adql: str, scratch) -> str:
    """The plan PostgreSQL makes for the SQL DaCHS translates ``adql`` to,
    run on the 100k-row scratch copies of the tables."""
    from gavo import api  # noqa: F401  (sets up DaCHS's RD cache)
    from gavo.protocols import adqlglue
    translated, _ = adqlglue.morphADQL(adql)
    translated = translated.replace("%%", "%")
    for real, copy in scratch["tables"].items():
        translated = translated.replace(real, copy)
    with scratch["conn"].cursor() as cursor:
        cursor.execute("EXPLAIN " + translated)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    scratch["conn"].rollback()
    return plan


def test_knn_uses_the_hnsw_index(scratch_latents):
    plan = _explain("SELECT TOP 10 obs_id FROM retrspect.ml_results ORDER BY "
                    f"gavo_spectrum_distance(latent, '{QUERY_ID}')",
                    scratch_latents)
    assert "Index Scan using ml_big_latent_hnsw" in plan, plan


def test_knn_with_join_uses_the_hnsw_index(scratch_latents):
    plan = _explain(
        "SELECT TOP 10 s.ssa_targname, m.obs_id, "
        f"gavo_spectrum_distance(m.latent, '{QUERY_ID}') AS d "
        "FROM retrspect.ml_results AS m JOIN retrspect.spectra AS s "
        "ON s.ssa_pubdid = m.pubdid ORDER BY d", scratch_latents)
    assert "Index Scan using ml_big_latent_hnsw" in plan, plan


def test_filtered_knn_uses_index_or_exact_fallback(scratch_latents):
    """A broad filter goes through the HNSW index (iterative scan); a very
    selective one through the filter's own index and an exact sort."""
    broad = _explain(
        "SELECT TOP 10 obs_id FROM retrspect.ml_results WHERE snr > 5 "
        f"ORDER BY gavo_spectrum_distance(latent, '{QUERY_ID}')",
        scratch_latents)
    assert "ml_big_latent_hnsw" in broad, broad
    selective = _explain(
        "SELECT TOP 10 obs_id FROM retrspect.ml_results WHERE "
        f"ml_class = 'qso' ORDER BY gavo_spectrum_distance(latent, "
        f"'{QUERY_ID}')", scratch_latents)
    assert "ml_big_ml_class" in selective and "Sort" in selective, selective


def test_every_tap_example_runs(tap):
    """What a TOPCAT user copies from /tap/examples works as it stands."""
    examples = tap.examples
    assert len(examples) >= 9
    knn = other_space = 0
    for example in examples:
        rows = tap.search(example["QUERY"]).to_table()
        assert len(rows) > 0, example["QUERY"]
        knn += "gavo_" in example["QUERY"]
        other_space += "retrspect.space_pca_blue" in example["QUERY"]
    assert knn >= 4 and other_space >= 1
