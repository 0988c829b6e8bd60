"""The unknown-class rule (issue 13): a spectrum the models cannot place
keeps its class probabilities but gets no class."""
from __future__ import annotations

import numpy as np
import pytest

from retrspect.ingest import contract, pipeline
from retrspect.ingest.bundled import bundled_sources
from retrspect.ingest.errors import ModelError


@pytest.mark.parametrize("coverage,anomaly,min_coverage,ceiling,known", [
    (0.9, 1.0, 0.8, 2.0, True),
    (0.7, 1.0, 0.8, 2.0, False),     # too little of the grid
    (0.9, 3.0, 0.8, 2.0, False),     # reconstructed worse than any validation spectrum
    (0.9, None, 0.8, 2.0, False),    # no anomaly (NaN) counts as beyond
    (0.9, 2.0, 0.8, 2.0, True),      # the ceiling itself is inside
    (0.3, 9.0, None, None, True),    # models without the entries: no rule
    (0.9, 9.0, 0.8, None, True),
    (0.7, 1.0, None, 2.0, True),
])
def test_class_is_known(coverage, anomaly, min_coverage, ceiling, known):
    assert contract.class_is_known(coverage, anomaly, min_class_coverage=min_coverage,
                                   anomaly_ceiling=ceiling) is known


@pytest.mark.parametrize("value", ["nan", "-1", "high"])
def test_a_bad_rule_entry_is_refused_naming_the_file(tmp_path, write_test_models, value):
    from retrspect.ingest.infer import load_model
    path = write_test_models(tmp_path, kinds=("vae",),
                             extra={"vae": {"anomaly_ceiling": value}})["vae"]
    with pytest.raises(ModelError, match="anomaly_ceiling") as err:
        load_model(path)
    assert path.name in str(err.value)


@pytest.fixture(scope="module")
def spectra_files():
    return [str(s.path) for s in bundled_sources() if s.collection == "STELIB"][:3]


def _rows(directory, files):
    options = pipeline.IngestOptions(model_dir=directory, workers=1,
                                     latent_dim=32, latent_metric="l2")
    return pipeline.process_chunk(files, "/", options).rows


@pytest.mark.parametrize("extra,known", [
    ({"vae": {"anomaly_ceiling": 1e30}, "classifier": {"min_class_coverage": 0.5}}, True),
    ({"vae": {"anomaly_ceiling": 0.0}}, False),
    ({"classifier": {"min_class_coverage": 1.5}}, False),
])
def test_rows_outside_the_domain_keep_probabilities_without_a_class(
        tmp_path, write_test_models, spectra_files, test_models_labels, extra, known):
    write_test_models(tmp_path, extra=extra)
    rows = _rows(tmp_path, spectra_files)
    assert len(rows) == len(spectra_files)
    for row in rows:
        p = np.array([row[f"p_{label.lower()}"] for label in test_models_labels])
        assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0, abs=1e-5)
        assert row["class_uncertainty"] is not None and row["latent"] is not None
        if known:
            assert row["ml_class"] == test_models_labels[int(p.argmax())]
            assert row["class_probability"] == pytest.approx(p.max())
        else:
            assert row["ml_class"] is None and row["class_probability"] is None
