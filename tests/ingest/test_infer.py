"""retrspect.ingest.infer and .pipeline on real ONNX files and real spectra."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from retrspect.ingest import infer, pipeline, preprocess


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, write_test_models):
    directory = tmp_path_factory.mktemp("models")
    write_test_models(directory)
    return directory


def test_provider_falls_back_to_cpu_with_one_clear_line(model_dir):
    """onnxruntime-gpu here lists CUDA but cannot load it: we pick the CPU,
    say why in one log line, and onnxruntime prints no error block."""
    code = ("import logging, sys\n"
            "logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
            "from retrspect.ingest.infer import ModelSet, choose_providers\n"
            f"models = ModelSet.load({str(model_dir)!r})\n"
            "print(models.models['vae'].session.get_providers())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, check=True)
    providers, reason = infer.choose_providers()
    assert providers == ("CPUExecutionProvider",)
    assert "CPU" in reason and "CUDA" in reason
    lines = [line for line in result.stdout.splitlines() if "onnxruntime:" in line]
    assert len(lines) == 1 and "CPU" in lines[0]
    assert "['CPUExecutionProvider']" in result.stdout
    assert "Error" not in result.stderr and "CUDA" not in result.stderr


def test_forced_cpu(monkeypatch):
    infer.choose_providers.cache_clear()
    monkeypatch.setenv("RETRSPECT_PROVIDER", "cpu")
    try:
        providers, reason = infer.choose_providers()
        assert providers == ("CPUExecutionProvider",) and "forced" in reason
    finally:
        infer.choose_providers.cache_clear()


def test_model_with_wrong_latent_dimension_is_refused(model_dir, tmp_path):
    with pytest.raises(infer.ModelError) as err:
        infer.models_for_table(16, "l2", model_dir)
    assert "vae-" in str(err.value) and "vector(16)" in str(err.value)
    with pytest.raises(infer.ModelError, match="metric"):
        infer.models_for_table(32, "cosine", model_dir)


def test_not_an_onnx_file_is_refused(tmp_path):
    bad = tmp_path / "vae-000000000000.onnx"
    bad.write_text("not onnx")
    with pytest.raises(infer.ModelError, match=str(bad)):
        infer.ModelSet.load(tmp_path)


def test_chunk_values_equal_direct_onnx(model_dir, stelib_files, tmp_path,
                                       run_directly, test_models_grid,
                                       test_models_labels):
    """Rows carry exactly what the ONNX files give on prepare()'s output."""
    broken = tmp_path / "broken.fits"
    broken.write_text("SIMPLE  = nonsense")
    options = pipeline.IngestOptions(model_dir=model_dir, workers=1,
                                     latent_dim=32, latent_metric="l2")
    result = pipeline.process_chunk([*stelib_files[:4], str(broken)], "/",
                                    options)
    assert [name for name, _ in result.skipped] == [str(broken)[1:]]
    assert len(result.rows) == 4

    from retrspect.ingest.sources import read_source
    spectra = [s for f in stelib_files[:4] for s in read_source(f)]
    flux, weight = preprocess.prepare_batch(spectra, test_models_grid)
    paths = {p.name.split("-")[0]: p for p in model_dir.glob("*.onnx")}
    mean, logvar, _, anomaly = run_directly(paths["vae"], flux, weight)
    probabilities, _ = run_directly(paths["classifier"], flux, weight)
    z, z_err = run_directly(paths["velocity"], flux, weight)
    for i, row in enumerate(result.rows):
        np.testing.assert_allclose(row["latent"], mean[i], rtol=1e-6)
        np.testing.assert_allclose(row["latent_sigma"],
                                   np.exp(0.5 * logvar[i]), rtol=1e-6)
        assert row["anomaly"] == pytest.approx(float(anomaly[i]), rel=1e-6)
        assert row["ml_class"] == (
            test_models_labels[int(np.argmax(probabilities[i]))])
        assert row["velocity"] == pytest.approx(pipeline.C_KMS * z[i], rel=1e-6)
        assert row["redshift_err"] == pytest.approx(float(z_err[i]), rel=1e-6)
        assert row["latent_model"].startswith("vae-0.0.1-")


def test_pool_and_dask_give_the_same_rows(model_dir, stelib_files):
    """The local process pool and a 2-worker Dask LocalCluster agree with a
    single process, spectrum by spectrum."""
    base = dict(model_dir=model_dir, latent_dim=32, chunk_files=3,
                progress=False)
    serial = pipeline.run(stelib_files, "/", pipeline.IngestOptions(
        workers=1, **base))
    pooled = pipeline.run(stelib_files, "/", pipeline.IngestOptions(
        workers=2, **base))
    dasked = pipeline.run(stelib_files, "/", pipeline.IngestOptions(
        workers=2, dask="local", **base))
    by_id = [{row["obs_id"]: row for row in rows}
             for rows in (serial, pooled, dasked)]
    assert len(by_id[0]) == len(stelib_files)
    for other in by_id[1:]:
        assert other.keys() == by_id[0].keys()
        for obs_id, row in by_id[0].items():
            np.testing.assert_allclose(other[obs_id]["latent"], row["latent"],
                                       rtol=1e-5)


def test_ingest_without_models_gives_metadata_only(stelib_files):
    options = pipeline.IngestOptions(use_models=False, workers=1)
    result = pipeline.process_chunk(stelib_files[:2], "/", options)
    assert len(result.rows) == 2
    assert "latent" not in result.rows[0] and "ssa_snr" in result.rows[0]
    assert "infer" not in result.seconds
