"""ONNX export under the contract (retrspect.models.export).
"""
import json
import math

import numpy as np
import pytest
import torch

from retrspect.ingest.errors import ModelError
from retrspect.ingest.infer import load_model
from retrspect.ingest.preprocess import MODEL_GRID, Grid
from retrspect.models import catalogue
from retrspect.models import export as X
from retrspect.models.nets import SpectrumClassifier, SpectrumVAE


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("onnx")
    vae = SpectrumVAE(MODEL_GRID.npix, latent_dim=16).eval()
    clf = SpectrumClassifier(MODEL_GRID.npix, heads=2).eval()
    clf.temperature.fill_(1.7)
    paths = {
        "vae": X.export(vae, "vae", MODEL_GRID, out, metrics={"a": 1},
                        extra={"latent_dim": 16, "metric": "l2"}),
        "classifier": X.export(clf, "classifier", MODEL_GRID, out,
                               extra={"labels": json.dumps(list(catalogue.CLASSES))}),
    }
    return {"vae": (vae, paths["vae"]), "classifier": (clf, paths["classifier"])}


@pytest.mark.parametrize("name", ["vae", "classifier"])
def test_onnx_equals_torch(exported, held_out_spectra, name):
    model, path = exported[name]
    flux, weight = held_out_spectra
    diffs = X.compare_with_torch(model, path, flux, weight)
    assert max(v for k, v in diffs.items() if k != "max_relative") < 1e-4 or \
        diffs["max_relative"] < 1e-4


def test_export_name_is_content_hash_and_metadata_complete(exported):
    import hashlib
    _, path = exported["vae"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert path.name == f"vae-{digest}.onnx"
    meta = load_model(path).metadata
    for key in ("model", "version", "grid", "normalisation", "opset", "training_data",
                "source_commit", "metrics", "latent_dim", "metric"):
        assert key in meta, key
    assert meta["model"] == "vae" and meta["latent_dim"] == "16" and meta["metric"] == "l2"
    assert Grid.from_json(meta["grid"]) == MODEL_GRID
    assert meta["opset"] == str(X.OPSET)


def test_mismatched_grid_or_dimension_is_refused(exported, checked_info):
    _, path = exported["vae"]
    assert checked_info(path, kind="vae", grid=MODEL_GRID, latent_dim=16)["latent_dim"] == 16
    with pytest.raises(ModelError, match="latent dimension 16 does not match the expected 32"):
        checked_info(path, latent_dim=32)
    other = Grid.spanning(3800.0, 9000.0, 1024)
    with pytest.raises(ModelError, match="does not match the expected grid"):
        checked_info(path, grid=other)
    with pytest.raises(ModelError, match="expected 'classifier'"):
        checked_info(path, kind="classifier")


def test_renamed_or_edited_file_is_refused(exported, tmp_path, checked_info):
    _, path = exported["classifier"]
    copy = tmp_path / "classifier-000000000000.onnx"
    copy.write_bytes(path.read_bytes())
    with pytest.raises(ModelError, match="content hash"):
        checked_info(copy)


def test_classifier_gives_uniform_probabilities_without_coverage(exported, session_of):
    model, path = exported["classifier"]
    sess = session_of(path)
    flux = np.zeros((2, MODEL_GRID.npix), np.float32)
    p, u = sess.run(None, {"flux": flux, "weight": flux})
    assert np.allclose(p, 0.1, atol=1e-6)
    assert np.allclose(u, math.log(10), atol=1e-5)
