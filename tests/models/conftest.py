"""Shared fixtures of the training-code tests: the labelled catalogue,
prepared held-out spectra, and the contract's checks on a model file."""

import pytest
import torch

from retrspect.ingest import contract
from retrspect.ingest.infer import load_model
from retrspect.models import catalogue
from retrspect.models import evaluate as E

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def items():
    """The labelled real spectra (read once per test run)."""
    return catalogue.load_catalogue()


@pytest.fixture(scope="session")
def held_out_spectra(items):
    """Every twelfth test star and every galaxy and QSO, prepared."""
    chosen = [i for i in items if i.split == "test"][::12] + \
        [i for i in items if i.kind != "star"]
    return E.prepared(chosen)


def _session_of(path):
    """An ONNX Runtime session of a model file, through the contract."""
    return load_model(path, threads=2).session


def _checked_info(path, **expected):
    """The contract's checks: load (content hash included), then fit."""
    model = load_model(path, threads=1)
    contract.check_fits(model.description, **expected)
    return model.info


@pytest.fixture
def session_of():
    """``session_of(path)``: an ONNX Runtime session of a model file."""
    return _session_of


@pytest.fixture
def checked_info():
    """``checked_info(path, **expected)``: the contract's checks, then the metadata."""
    return _checked_info
