"""The export-time graph rewrite (1-D convolutions as 2-D ones).

:func:`models.export.conv1d_as_conv2d` changes how the graph computes, not
what: the rewritten graph must equal the torch module within 1e-4 on real
prepared spectra, and it must really have changed (2-D convolutions that
ONNX Runtime turns into its NCHWc kernels).
"""

import numpy as np
import onnx
import pytest
import torch

from retrspect.ingest.preprocess import MODEL_GRID
from retrspect.models import catalogue
from retrspect.models import evaluate as E
from retrspect.models import export as X
from retrspect.models.nets import SpectrumClassifier, SpectrumVAE

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def spectra():
    """Held-out real spectra plus every galaxy and QSO, prepared as ingest does."""
    items = catalogue.load_catalogue()
    chosen = [i for i in items if i.split == "test"][::6] + \
        [i for i in items if i.kind != "star"]
    return E.prepared(chosen)


@pytest.fixture(scope="module")
def modules():
    torch.manual_seed(3)
    return {"vae": SpectrumVAE(MODEL_GRID.npix, latent_dim=16).eval(),
            "classifier": SpectrumClassifier(MODEL_GRID.npix).eval()}


def conv_weight_ranks(proto):
    inits = {i.name: len(i.dims) for i in proto.graph.initializer}
    return [inits.get(n.input[1]) for n in proto.graph.node if n.op_type == "Conv"]


@pytest.mark.parametrize("name", ["vae", "classifier"])
def test_rewrite_makes_the_convolutions_2d(modules, name):
    plain = onnx.load_from_string(X.onnx_bytes(modules[name], MODEL_GRID.npix, name,
                                               optimise=False))
    rewritten = onnx.load_from_string(X.onnx_bytes(modules[name], MODEL_GRID.npix, name))
    assert conv_weight_ranks(plain) == [3] * 6
    assert conv_weight_ranks(rewritten) == [4] * 6
    ops = [n.op_type for n in rewritten.graph.node]
    # one Unsqueeze into the trunk and one Squeeze out of it: the LeakyReLUs
    # between the convolutions run on the 4-D tensors
    assert ops.count("Unsqueeze") - [n.op_type for n in plain.graph.node].count("Unsqueeze") == 1
    assert ops.count("Squeeze") - [n.op_type for n in plain.graph.node].count("Squeeze") == 1
    onnx.checker.check_model(rewritten)


def test_onnx_runtime_uses_nchwc_kernels_for_the_rewritten_graph(modules, tmp_path):
    import onnxruntime as ort

    def optimised_domains(data, path):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(path)
        options.log_severity_level = 3
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return {n.domain for n in onnx.load(str(path)).graph.node}

    model = modules["classifier"]
    plain = optimised_domains(X.onnx_bytes(model, MODEL_GRID.npix, "classifier",
                                           optimise=False), tmp_path / "plain.onnx")
    rewritten = optimised_domains(X.onnx_bytes(model, MODEL_GRID.npix, "classifier"),
                                  tmp_path / "rewritten.onnx")
    assert "com.microsoft.nchwc" not in plain
    assert "com.microsoft.nchwc" in rewritten


@pytest.mark.parametrize("name", ["vae", "classifier"])
def test_rewritten_graph_equals_torch_on_real_spectra(modules, spectra, tmp_path, name):
    flux, weight = spectra
    path = X.export(modules[name], name, MODEL_GRID, tmp_path)
    diffs = X.compare_with_torch(modules[name], path, flux, weight)
    worst = max(v for k, v in diffs.items() if k != "max_relative")
    assert worst < 1e-4 or diffs["max_relative"] < 1e-4, diffs


def test_rewrite_leaves_graphs_without_constant_1d_convolutions_alone():
    from onnx import TensorProto, helper
    # a Conv whose weight is an input (as in the velocity scan's correlation)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=2)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 16]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 14])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", X.OPSET)])
    assert X.conv1d_as_conv2d(proto) == 0
    assert [n.op_type for n in proto.graph.node] == ["Conv"]


def test_rewritten_and_plain_graphs_agree(modules, spectra):
    import onnxruntime as ort
    flux, weight = spectra
    feed = {"flux": flux, "weight": weight}
    model = modules["vae"]
    runs = []
    for optimise in (False, True):
        data = X.onnx_bytes(model, MODEL_GRID.npix, "vae", optimise=optimise)
        runs.append(ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feed))
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
