"""Training a latent space on the archive's own spectra (issue 15): a tiny
space trained end to end is exported under the contract, ingested and
searchable over TAP; bad requests are refused clearly; test objects never
reach training."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

RETRSPECT = str(Path(sys.executable).parent / "retrspect")
TINY = ["--collections", "STELIB", "--window", "6400", "6800", "--npix", "64",
        "--epochs", "2", "--pool", "256", "--latent-dim", "4", "--limit", "150"]


def _train(*args, timeout=900):
    return subprocess.run([RETRSPECT, "train-space", *args], capture_output=True,
                          encoding="utf-8", errors="replace", timeout=timeout)


def test_a_tiny_space_is_trained_exported_ingested_and_searchable(tmp_path, tap):
    from retrspect.ingest.infer import model_dir_from_environment, load_model

    result = _train("tinyarchive", *TINY, "--labels", "teff", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train tinyarchive" in result.stderr          # the progress bar, with the loss
    (path,) = tmp_path.glob("tinyarchive-*.onnx")
    model = load_model(path)                               # the contract's checks
    assert (model.kind, model.space, model.latent_dim) == ("space", "tinyarchive", 4)
    assert model.grid.npix == 64 and model.min_coverage == 0.9
    figures = model.info["metrics"]
    assert figures["n_split"]["test"] > 0 and "self_retrieval" in figures
    assert "teff" in figures["knn"]
    card = (tmp_path / "cards" / "tinyarchive.md").read_text(encoding="utf-8")
    assert "tinyarchive" in card and "$" not in card
    assert f"{figures['self_retrieval']['first']:.3f}" in card

    installed = model_dir_from_environment() / path.name
    installed.write_bytes(path.read_bytes())
    try:
        subprocess.run([RETRSPECT, "import"], check=True, capture_output=True, timeout=900)
        rows = tap.search(
            "SELECT TOP 3 obs_id, gavo_spectrum_distance(latent, 'stelib_hd005820') AS d "
            "FROM retrspect.space_tinyarchive ORDER BY d").to_table()
        assert rows["obs_id"][0] == "stelib_hd005820" and rows["d"][0] == 0
        (n,) = tap.search("SELECT n_vectors FROM retrspect.spaces WHERE "
                          "space_name = 'tinyarchive'").to_table()["n_vectors"]
        assert n > 200   # every covering spectrum, not only the 150 it learned from
    finally:
        installed.unlink()
        subprocess.run([RETRSPECT, "import"], check=True, capture_output=True, timeout=900)


def test_a_linear_window_space_publishes_an_isometric_latent(tmp_path):
    """``--encoder linear``: the card names the network and the latent, and
    the file's latent distances are those of its reconstructions."""
    from retrspect.ingest.infer import load_model
    from retrspect.ingest.preprocess import prepare_batch
    from retrspect.ingest.sources import read_source

    result = _train("tinylinear", *TINY[:-4], "--latent-dim", "8", "--encoder", "linear",
                    "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = tmp_path.glob("tinylinear-*.onnx")
    model = load_model(path)
    assert model.latent_dim == 8
    card = (tmp_path / "cards" / "tinylinear.md").read_text(encoding="utf-8")
    assert "A linear variational autoencoder (probabilistic PCA)" in card
    assert "projection onto the decoder's subspace" in card
    files = sorted((Path(__file__).resolve().parents[2] / "resdir" / "data" / "stelib")
                   .glob("*.fits"))[:20]
    spectra = [read_source(str(f))[0] for f in files]
    flux, weight = prepare_batch(spectra, model.grid)
    out = dict(zip([o.name for o in model.session.get_outputs()], model(flux, weight)))
    z, rec = out["latent_mean"].astype(float), out["reconstruction"].astype(float)
    dz = np.linalg.norm(z[:, None] - z[None], axis=-1)
    drec = np.linalg.norm(rec[:, None] - rec[None], axis=-1)
    np.testing.assert_allclose(dz, drec, atol=1e-3 * dz.max())


@pytest.mark.parametrize("args, message", [
    (["--collections", "NOPE", "--window", "6400", "6800", "--npix", "64"],
     "no spectra in collection(s) ['NOPE']; the archive has"),
    (["--collections", "MILES", "--window", "20000", "21000", "--npix", "64"],
     "covers 90% of 20000-21000 A (vacuum)"),
    (["--collections", "MILES", "--window", "6400", "6800", "--npix", "64",
      "--labels", "teff", "halpha_strength"],
     "unknown label column(s) ['halpha_strength']"),
    (["--collections", "MILES", "--window", "6400", "6800", "--npix", "64",
      "--encoder", "linear", "--latent-dim", "80"],
     "a linear space has at most npix (64) latent dimensions"),
    (["--collections", "MILES", "--window", "6400", "6800", "--npix", "64",
      "--labels", "mk_type"], "unknown label column(s) ['mk_type']"),  # not numeric
])
def test_bad_requests_are_refused_with_clear_errors(args, message, tmp_path):
    result = _train("refused", *args, "--out", str(tmp_path), timeout=300)
    assert result.returncode == 1
    assert message in result.stderr, result.stderr[-2000:]
    assert not list(tmp_path.glob("*.onnx"))


def test_objects_are_split_and_test_objects_never_train(monkeypatch):
    from retrspect.models import archive_space as S

    spec = S.SpaceSpec("splitcheck", ("MILES", "STELIB"), 6400.0, 6800.0, 64,
                       epochs=1, pool=128, latent_dim=4)
    items = S.load_archive(spec, progress=False)
    by_object = {}
    for item in items:
        by_object.setdefault(item.object_id, set()).add(item.split)
    assert all(len(splits) == 1 for splits in by_object.values())
    # a star in both libraries shares its split
    both = {i.object_id for i in items if i.collection == "MILES"} & \
        {i.object_id for i in items if i.collection == "STELIB"}
    assert len(both) > 50
    counts = {s: sum(i.split == s for i in items) for s in ("train", "val", "test")}
    assert counts["test"] > 0.05 * len(items) and counts["train"] > 0.7 * len(items)

    seen = []
    original = S.make_sample

    def recording(items_, index, *rest):
        seen.append(items_[index].split)
        return original(items_, index, *rest)
    monkeypatch.setattr(S, "make_sample", recording)
    S.train_space(items, spec, progress=False)
    assert seen and set(seen) == {"train"}
