"""The plug-in contract (models/CONTRACT.md): a space model that follows it
loads and runs; one that breaks it is refused with the file and the field
named."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from retrspect.ingest import infer, pipeline
from retrspect.ingest.errors import ModelError


def test_a_space_model_loads_with_its_roles(write_space_model, tmp_path):
    path = write_space_model(tmp_path, space="tiny", dim=8)
    model = infer.load_model(path)
    assert (model.kind, model.key, model.space) == ("space", "tiny", "tiny")
    assert model.model_id == f"tiny-1.0.0-{path.stem.rsplit('-', 1)[1]}"
    assert model.outputs == ("latent", "level", "colour")
    specs = {s.name: s for s in model.output_specs}
    assert specs["latent"].columns == ("latent",) and specs["latent"].metric == "l2"
    assert specs["colour"].columns == ("p_blue", "p_red")
    assert (specs["level"].unit, specs["level"].ucd) == ("", "phot.flux;stat.mean")
    # the metadata-only reader (the RD's) says the same
    assert infer.read_description(path) == model.description


def _refusal(write_space_model, tmp_path, **metadata) -> str:
    path = write_space_model(tmp_path, metadata=metadata)
    with pytest.raises(ModelError) as err:
        infer.load_model(path)
    # the same refusal from the reader the RD uses
    with pytest.raises(ModelError) as again:
        infer.read_description(path)
    assert str(again.value) == str(err.value)
    assert str(path) in str(err.value)
    return str(err.value)


def test_missing_grid_is_refused(write_space_model, tmp_path):
    assert "retrspect.grid is missing" in _refusal(write_space_model, tmp_path,
                                                   grid=None)


def test_wrong_output_shape_is_refused(write_space_model, tmp_path):
    # a one-number-per-spectrum output mapped as class probabilities
    outputs = {"latent": {"role": "latent", "metric": "l2"},
               "level": {"role": "probabilities", "labels": ["a", "b"]}}
    message = _refusal(write_space_model, tmp_path, outputs=json.dumps(outputs))
    assert "retrspect.outputs" in message and "'level'" in message
    assert "needs 2 dimension(s)" in message


def test_unknown_output_role_is_refused(write_space_model, tmp_path):
    outputs = {"latent": {"role": "latent", "metric": "l2"},
               "level": {"role": "redshift"}}
    message = _refusal(write_space_model, tmp_path, outputs=json.dumps(outputs))
    assert "retrspect.outputs entry 'level' has role 'redshift'" in message


def test_dimension_mismatch_is_refused(write_space_model, tmp_path):
    message = _refusal(write_space_model, tmp_path, latent_dim="9")
    assert "retrspect.latent_dim is '9'" in message and "8 dimensions" in message


@pytest.mark.parametrize("metadata, field", [
    ({"space": "generic"}, "retrspect.space"),
    ({"space": "Bad-Name"}, "retrspect.space"),
    ({"frame": "heliocentric"}, "retrspect.frame"),
    ({"medium": "air"}, "retrspect.medium"),
    ({"min_coverage": "1.5"}, "retrspect.min_coverage"),
    ({"metric": "cosine"}, "retrspect.metric"),
    ({"outputs": "not json"}, "retrspect.outputs"),
    ({"outputs": json.dumps({"level": {"role": "scalar", "unit": "", "ucd": "x"}})},
     "retrspect.outputs"),                                   # no latent
    ({"outputs": json.dumps({"latent": {"role": "latent", "metric": "l2"},
                             "missing": {"role": "scalar", "unit": "", "ucd": "x"}})},
     "retrspect.outputs"),                                   # not an output
    ({"outputs": json.dumps({"latent": {"role": "latent", "metric": "l2"},
                             "level": {"role": "scalar", "unit": ""}})},
     "retrspect.outputs"),                                   # no ucd
])
def test_other_contract_breaks_name_the_field(write_space_model, tmp_path,
                                              metadata, field):
    assert field in _refusal(write_space_model, tmp_path, **metadata)


def test_two_files_of_one_space_are_refused(write_space_model, tmp_path):
    write_space_model(tmp_path, seed=1)
    second = write_space_model(tmp_path, seed=2)
    with pytest.raises(ModelError, match="a second space tiny"):
        infer.ModelSet.load(tmp_path)
    assert second.exists()


def test_space_columns_follow_coverage_and_roles(write_space_model, tmp_path,
                                                 stelib_files, run_directly,
                                                 test_models_grid):
    """Rows carry what the ONNX file gives; a spectrum below the space's
    min_coverage has its outputs NULL (its TAP view leaves it out)."""
    from retrspect.ingest.preprocess import Grid, prepare_batch
    from retrspect.ingest.readers import read_spectra

    # a window 6400-7400 A: STELIB covers it; the same star masked beyond
    # 6900 A covers half of it
    window = Grid.spanning(6400.0, 7400.0, 128)
    path = write_space_model(tmp_path, grid=window,
                             metadata={"min_coverage": "0.8"})
    models = infer.ModelSet.load(tmp_path)
    spectra = [read_spectra(str(f))[0] for f in stelib_files[:3]]
    cut = spectra[0]
    spectra.append(dataclasses.replace(
        cut, mask=np.asarray(cut.mask) | (cut.wavelength.value > 6900.0)))
    outputs = pipeline.infer_batch(spectra, models)
    flux, weight = prepare_batch(spectra, window)
    latent, level, colour = run_directly(path, flux, weight)
    for i in range(len(spectra)):
        row = pipeline.space_columns(models, outputs, i)
        assert row["tiny__model"] == models.models["tiny"].model_id
        assert row["tiny__grid_coverage"] == pytest.approx(
            np.mean(weight[i] > 0))
        if row["tiny__grid_coverage"] >= 0.8:
            np.testing.assert_allclose(row["tiny__latent"], latent[i], rtol=1e-6)
            assert row["tiny__level"] == pytest.approx(level[i])
            assert row["tiny__p_red"] == pytest.approx(colour[i][1])
        else:
            assert row["tiny__latent"] is None and row["tiny__level"] is None
    covered = [pipeline.space_columns(models, outputs, i)["tiny__latent"] is not None
               for i in range(len(spectra))]
    assert covered == [bool(np.mean(w > 0) >= 0.8) for w in weight]
    assert covered == [True, True, True, False]


def test_rest_frame_space_reads_the_measured_redshift(write_space_model,
                                                      write_test_models, tmp_path,
                                                      stelib_files, run_directly):
    """A rest-frame space runs on spectra shifted by the velocity model's z."""
    from retrspect.ingest.preprocess import prepare_batch
    from retrspect.ingest.readers import read_spectra

    write_test_models(tmp_path, kinds=("velocity",))
    path = write_space_model(tmp_path, frame="rest")
    models = infer.ModelSet.load(tmp_path)
    spectra = [read_spectra(str(f))[0] for f in stelib_files[:2]]
    outputs = pipeline.infer_batch(spectra, models)
    z = outputs["velocity"]["redshift"]
    assert np.all(np.abs(z) > 0)  # the test velocity model gives some z
    flux, weight = prepare_batch(spectra, models.models["tiny"].grid, z)
    latent = run_directly(path, flux, weight)[0]
    np.testing.assert_allclose(outputs["tiny"]["latent"], latent, rtol=1e-6)
    unshifted = run_directly(path, *prepare_batch(spectra, models.models["tiny"].grid))[0]
    assert not np.allclose(unshifted, latent)
    # selecting the space alone keeps the velocity model it needs
    assert sorted(models.select("tiny").models) == ["tiny", "velocity"]
