"""Facts about the models have one source, the ONNX metadata: the README,
the RD and the column types must say the same (issue 11: the README said
cosine while everything else said L2)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from retrspect.ingest.infer import SHIPPED_MODEL_DIR, ModelSet
from retrspect.ingest.preprocess import MIN_GRID_COVERAGE

ROOT = Path(__file__).resolve().parent.parent
#: how the README names each metric
METRIC_WORDS = {"l2": "L2", "cosine": "cosine"}


@pytest.fixture(scope="module")
def vae():
    return ModelSet.load(SHIPPED_MODEL_DIR).models["vae"]


@pytest.fixture(scope="module")
def ml_table():
    rd = etree.parse(str(ROOT / "resdir" / "q.rd"))
    return rd.find(".//table[@id='ml_results']")


def test_rd_metric_and_vector_type_are_the_models(vae, ml_table):
    assert ml_table.findtext("property[@name='latentMetric']").strip() \
        == vae.metric
    latent = ml_table.find("column[@name='latent']")
    assert latent.get("type") == f"vector({vae.latent_dim})"
    sigma = ml_table.find("column[@name='latent_sigma']")
    assert sigma.get("type") == f"real[{vae.latent_dim}]"
    ops = {"l2": "vector_l2_ops", "cosine": "vector_cosine_ops"}[vae.metric]
    assert ml_table.findtext("index[@method='hnsw']").split() == ["latent", ops]


def test_readme_states_the_trained_metric(vae):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stated = re.findall(r"the metric the VAE was trained for \((\w+)\)", readme)
    assert stated == [METRIC_WORDS[vae.metric]]


def test_grid_and_threshold_as_the_rd_and_readme_state_them(vae, ml_table):
    wave = vae.grid.wavelength
    grid_range = f"{wave[0]:.0f}-{wave[-1]:.0f}"
    description = " ".join(ml_table.find("column[@name='grid_coverage']")
                           .get("description").split())
    assert f"({grid_range} Angstrom, vacuum)" in description
    assert f"Below {MIN_GRID_COVERAGE:g} the models give no answer" \
        in description
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"The models work on {grid_range} A (vacuum)" in readme
    # the README says the threshold in words: a new one needs new words
    words = {0.5: "half"}[MIN_GRID_COVERAGE]
    assert f"cover less than {words} of that grid" in readme
