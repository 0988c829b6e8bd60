"""ML at ingest on the real stack.

On the demo: every spectrum has its ML results in TAP, and the values there
are what the installed ONNX models give when run directly on the same file.
On the bench schema (the demo's RD in schema retrspect_bench) with small
real ONNX test models: a model whose latent dimension does not fit the
column is refused before anything is written, and a re-embedding with a new
model version swaps all results in one transaction, also when it is killed
half-way.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest


N_FILES = 1200


# ------------------------------------------------------------ the demo ----

def test_every_spectrum_has_ml_results(tap, db, sql):
    """Every spectrum has an ML row with its grid coverage; latent, class
    probabilities, redshift and anomaly exactly where it covers at least
    half of the models' grid, NULL (never NaN) below: NGC 4151's far-UV and
    XQ100's near-IR spectra cover nothing of it (issue 11); a class exactly
    where the unknown-class rule places the spectrum (issue 13)."""
    from retrspect.ingest.contract import class_is_known
    from retrspect.ingest.infer import model_dir_from_environment, load_model
    from retrspect.ingest.preprocess import MIN_GRID_COVERAGE

    vae = load_model(sorted(model_dir_from_environment().glob("vae-*.onnx"))[0])
    classifier = load_model(sorted(model_dir_from_environment().glob("classifier-*.onnx"))[0])
    grid = vae.grid
    lo, hi = grid.wavelength[0] * 1e-10, grid.wavelength[-1] * 1e-10
    rows = sql(db, "SELECT s.ssa_pubdid, s.ssa_specstart, s.ssa_specend, "
                   "m.grid_coverage, m.latent IS NOT NULL, "
                   "m.ml_class IS NOT NULL, m.redshift, m.anomaly, m.p_g IS NOT NULL "
                   "FROM retrspect.spectra AS s LEFT OUTER JOIN "
                   "retrspect.ml_results AS m ON m.pubdid = s.ssa_pubdid")
    assert len(rows) == 1255
    embedded = unknown = 0
    for pubdid, start, end, coverage, latent, cls, redshift, anomaly, probs in rows:
        # the spectral range bounds the coverage from above (gaps lower it)
        overlap = max(0.0, np.log(min(end, hi) / max(start, lo)))
        assert coverage <= overlap / np.log(hi / lo) + 0.002, pubdid
        answered = coverage >= MIN_GRID_COVERAGE
        assert latent == probs == answered, pubdid
        # a class only where the unknown-class rule (issue 13) places it
        known = answered and class_is_known(
            coverage, anomaly, min_class_coverage=classifier.min_class_coverage,
            anomaly_ceiling=vae.anomaly_ceiling)
        assert cls == known, pubdid
        unknown += answered and not known
        assert (anomaly is not None) == answered, pubdid
        for value in (redshift, anomaly):
            assert value is None or np.isfinite(value), pubdid
        if not answered:
            assert redshift is None, pubdid
        embedded += answered
    outside = [pubdid for pubdid, start, end, *_ in rows
               if end < lo or start > hi]
    assert len(outside) == 2
    assert embedded >= 1240
    assert unknown <= 0.1 * embedded


def test_tap_values_equal_onnx_run_directly(tap, db, sql):
    """Latent, class probabilities and redshift of three spectra, as TAP
    serves them, against the installed models run by hand on the files."""
    import onnxruntime as ort
    from retrspect.ingest import preprocess
    from retrspect.ingest.sources import spectrum_of_row
    from retrspect.ingest.infer import model_dir_from_environment, load_model

    rows = sql(db, "SELECT obs_id, source_file, source_index FROM "
                   "retrspect.raw_data WHERE obs_id IN ('miles_m0028', "
                   "'stelib_hd005820', 'manga_test_spectra_0') ORDER BY obs_id")
    assert len(rows) == 3
    spectra = [spectrum_of_row("/var/gavo/inputs", f, i, obs_id)
               for obs_id, f, i in rows]
    served = {r["obs_id"]: r for r in tap.search(
        "SELECT obs_id, latent, p_g, p_galaxy, redshift, latent_model, "
        "class_model, velocity_model FROM retrspect.ml_results WHERE obs_id "
        "IN ('miles_m0028', 'stelib_hd005820', 'manga_test_spectra_0')"
    ).to_table()}
    for path in sorted(model_dir_from_environment().glob("*.onnx")):
        model = load_model(path)
        if model.kind == "space":
            continue  # tests/stack/test_spaces.py checks the plug-in spaces
        flux, weight = preprocess.prepare_batch(spectra, model.grid)
        session = ort.InferenceSession(str(path),
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        out = dict(zip(names, session.run(None, {"flux": flux,
                                                 "weight": weight})))
        for i, (obs_id, _, _) in enumerate(rows):
            row = served[obs_id]
            if model.kind == "vae":
                assert row["latent_model"] == model.model_id
                np.testing.assert_allclose(np.asarray(row["latent"]),
                                           out["latent_mean"][i], rtol=1e-4,
                                           atol=1e-5)
            elif model.kind == "classifier":
                assert row["class_model"] == model.model_id
                labels = model.labels
                assert row["p_g"] == pytest.approx(
                    out["probabilities"][i][labels.index("G")], abs=1e-5)
                assert row["p_galaxy"] == pytest.approx(
                    out["probabilities"][i][labels.index("galaxy")], abs=1e-5)
            else:
                assert row["velocity_model"] == model.model_id
                assert row["redshift"] == pytest.approx(
                    float(out["redshift"][i]), abs=1e-7)


# ------------------------------------------------- on the bench schema ----

def _bench_counts(psql) -> tuple[int, int, str]:
    """(raw rows, ML rows, model ids); no table counts as empty."""
    if psql("SELECT to_regclass('retrspect_bench.ml_results')") == "":
        return 0, 0, ""
    raw = int(psql("SELECT COUNT(*) FROM retrspect_bench.raw_data"))
    ml = int(psql("SELECT COUNT(*) FROM retrspect_bench.ml_results"))
    models = psql("SELECT string_agg(DISTINCT latent_model, ',') "
                   "FROM retrspect_bench.ml_results")
    return raw, ml, models


@pytest.fixture(scope="module")
def model_sets(write_test_models):
    # where the import, running as dachsroot, can read them
    root = Path("/var/tmp/retrspect-bench/test-models")
    subprocess.run(["rm", "-rf", str(root)], check=True)
    sets = {"v1": write_test_models(root / "v1", version="1.0.0", seed=1),
            "v2": write_test_models(root / "v2", version="2.0.0", seed=2),
            "dim16": write_test_models(root / "dim16", latent_dim=16,
                                       kinds=("vae",))}
    subprocess.run(["chmod", "-R", "a+rX", str(root.parent)], check=True)
    return {name: next(iter(paths.values())).parent
            for name, paths in sets.items()}


@pytest.fixture(scope="module")
def bench(model_sets, bench_tools):
    bench_tools.write_bench_rd(bench_tools.make_files(N_FILES))
    yield bench_tools
    bench_tools.dachs("drop", bench_tools.BENCH_RD, check=False)


def _import(bench, model_dir: Path, *dds: str, check=True):
    return bench.dachs("imp", bench.BENCH_RD, *dds,
                       env={"RETRSPECT_MODEL_DIR": str(model_dir)}, check=check)


def test_wrong_latent_dimension_is_refused_before_writing(bench, model_sets,
                                                          psql):
    bench.dachs("drop", bench.BENCH_RD, check=False)
    result = _import(bench, model_sets["dim16"], check=False)
    output = result.stdout + result.stderr
    assert "latent dimension 16" in output and "vector(32)" in output
    assert _bench_counts(psql)[:2] == (0, 0)


def test_reembed_swaps_model_versions_atomically(bench, model_sets, psql):
    bench.dachs("drop", bench.BENCH_RD, check=False)
    _import(bench, model_sets["v1"])
    raw, ml, models = _bench_counts(psql)
    assert raw == ml == N_FILES and models.startswith("vae-1.0.0-")

    # a re-embedding with v2, killed half-way: v1 results stay, complete
    env = dict(os.environ, PATH=f"{bench.VENV_BIN}:{os.environ['PATH']}",
               RETRSPECT_MODEL_DIR=str(model_sets["v2"]))
    process = subprocess.Popen(
        ["runuser", "-u", "dachsroot", "--", str(bench.VENV_BIN / "dachs"),
         "imp", bench.BENCH_RD, "reembed"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(2.5)
    assert process.poll() is None, "re-embedding finished before the kill"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert _bench_counts(psql) == (N_FILES, N_FILES, models)

    _import(bench, model_sets["v2"], "reembed")
    raw, ml, new_models = _bench_counts(psql)
    assert raw == ml == N_FILES and new_models.startswith("vae-2.0.0-")
    classes = psql("SELECT COUNT(*) FROM retrspect_bench.ml_results WHERE "
                    "class_model NOT LIKE 'classifier-2.0.0-%' OR "
                    "velocity_model NOT LIKE 'velocity-2.0.0-%'")
    assert classes == "0"
