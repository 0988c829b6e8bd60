"""ONNX export under the model contract (:mod:`retrspect.ingest.contract`):
metadata, hashed file names, the 2-D convolution rewrite, and the
comparison with torch.  Files are loaded back through
:func:`retrspect.ingest.infer.load_model`, the loader ingest uses.
"""
from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np

from retrspect.ingest.contract import (DECODER_DIR, OUTPUT_DOC, OUTPUTS, PREFIX, file_name,
                                       stem_of)
from retrspect.ingest.preprocess import NORMALISATION, Grid

#: The pinned ONNX opset of every shipped model.
OPSET = 17

def source_commit(repo=None):
    """The git commit of the code (``+dirty`` when the model code has changes)."""
    repo = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True,
                              capture_output=True, text=True).stdout.strip()
        # only the code counts: exported files, cards and plots do not
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                "models/*.py", "ingest/preprocess.py"],
                               cwd=repo, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty.strip() else "")


def onnx_bytes(model, npix, kind, *, opset=OPSET, optimise=True):
    """The model exported to ONNX (torch's TorchScript exporter, dynamo off).

    With ``optimise`` (the default) the 1-D convolutions are exported as
    2-D ones (:func:`conv1d_as_conv2d`: same weights, same outputs; ONNX
    Runtime runs them about twice as fast); ``optimise=False`` is the plain
    trace.
    """
    import torch
    flux = torch.ones(2, npix)
    weight = torch.ones(2, npix)
    outputs = OUTPUTS[kind]
    axes = {"flux": {0: "batch"}, "weight": {0: "batch"}}
    axes.update({name: {0: "batch"} for name in outputs})
    buffer = io.BytesIO()
    model.eval()
    torch.onnx.export(model, (flux, weight), buffer, dynamo=False, opset_version=opset,
                      input_names=["flux", "weight"], output_names=list(outputs),
                      dynamic_axes=axes, do_constant_folding=True)
    data = buffer.getvalue()
    if optimise:
        import onnx
        proto = onnx.load_from_string(data)
        conv1d_as_conv2d(proto)
        data = proto.SerializeToString()
    return data


# --------------------------------------------------------------------------
# Export-time graph rewrite for ONNX Runtime (the torch modules stay as they
# are; tests/test_onnx_graph.py checks the rewritten graphs against them)
# --------------------------------------------------------------------------

def conv1d_as_conv2d(proto):
    """Rewrite 1-D convolutions with constant weights as 2-D ones, in place.

    ``Conv`` on ``(N, C, L)`` becomes ``Unsqueeze -> Conv (N, C, 1, L) ->
    Squeeze``; the weights get a unit axis.  ONNX Runtime's CPU provider
    then applies its NCHWc layout and fused convolution kernels, which it
    has for 2-D convolutions only.  A ``Squeeze`` followed by element-wise
    ops (LeakyRelu, Relu) and an ``Unsqueeze`` of the same axis is then
    cancelled, so a stack of convolutions stays 4-D between them.

    Returns
    -------
    int
        Number of convolutions rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    axes_name = "retrspect_axis2"
    if axes_name not in inits:
        graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), axes_name))
    nodes = []
    count = 0
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if weight is None or len(weight.dims) != 3:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight)
        weight.CopyFrom(numpy_helper.from_array(w[:, :, None, :].copy(), weight.name))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        new_attrs = {}
        for key, value in attrs.items():
            if key in ("kernel_shape", "strides", "dilations"):
                new_attrs[key] = [1] + list(value)
            elif key == "pads":
                new_attrs[key] = [0, value[0], 0, value[1]]
            else:
                new_attrs[key] = value
        x4 = node.output[0] + "_4d_in"
        y4 = node.output[0] + "_4d"
        nodes.append(helper.make_node("Unsqueeze", [node.input[0], axes_name], [x4],
                                      name=node.name + "_unsqueeze"))
        nodes.append(helper.make_node("Conv", [x4] + list(node.input[1:]), [y4],
                                      name=node.name + "_2d", **new_attrs))
        nodes.append(helper.make_node("Squeeze", [y4, axes_name], [node.output[0]],
                                      name=node.name + "_squeeze"))
        count += 1
    del graph.node[:]
    graph.node.extend(_cancel_squeeze_unsqueeze(nodes, axes_name, graph))
    onnx.checker.check_model(proto)
    return count


_ELEMENTWISE = {"LeakyRelu", "Relu", "Sigmoid", "Tanh", "Clip"}


def _cancel_squeeze_unsqueeze(nodes, axes_name, graph):
    """Drop Squeeze(axis 2) -> element-wise -> Unsqueeze(axis 2) round trips."""
    consumers = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    drop = set()
    rename = {}
    for sq in nodes:
        if sq.op_type != "Squeeze" or list(sq.input[1:]) != [axes_name]:
            continue
        users = consumers.get(sq.output[0], [])
        if len(users) != 1 or users[0].op_type not in _ELEMENTWISE \
                or sq.output[0] in graph_outputs:
            continue
        act = users[0]
        after = consumers.get(act.output[0], [])
        if not after or act.output[0] in graph_outputs or not all(
                u.op_type == "Unsqueeze" and list(u.input[1:]) == [axes_name] for u in after):
            continue
        # Squeeze -> act -> Unsqueeze(s): act runs on the 4-D tensor instead
        drop.add(id(sq))
        for u in after:
            drop.add(id(u))
            rename[u.output[0]] = act.output[0] + "_4d"
        act.input[0] = sq.input[0]
        act.output[0] = act.output[0] + "_4d"
    out = []
    for node in nodes:
        if id(node) in drop:
            continue
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        out.append(node)
    return out


def export(model, kind, grid: Grid, directory, *, name=None, version="1.0.0",
           training_data="", metrics=None, extra=None, opset=OPSET, optimise=True):
    """Export a model, add metadata, write it under its content hash.

    Older files ``<name>-*.onnx`` in ``directory`` are removed.

    Parameters
    ----------
    model : torch.nn.Module
    kind : {"vae", "classifier", "velocity"}
    grid : Grid
    directory : path
    name : str, optional
        File name stem (default: ``kind``).
    version, training_data : str
    metrics : dict, optional
    extra : dict of str, optional
        Further metadata (keys without the prefix).

    Returns
    -------
    Path
    """
    import onnx
    if kind not in OUTPUTS:
        raise ValueError(f"unknown model kind {kind!r}")
    proto = onnx.load_from_string(onnx_bytes(model, grid.npix, kind, opset=opset,
                                               optimise=optimise))
    props = {
        "model": kind, "version": version, "grid": grid.to_json(),
        "normalisation": NORMALISATION, "opset": str(opset),
        "training_data": training_data, "source_commit": source_commit(),
        "metrics": json.dumps(metrics or {}, sort_keys=True, default=float),
        "outputs": json.dumps({n: OUTPUT_DOC[n] for n in OUTPUTS[kind]}),
    }
    if kind == "vae":  # the contract's VAE entries; the latent is L2 unless said
        extra = {"latent_dim": model.latent_dim, "metric": "l2", **(extra or {})}
    props.update({k: str(v) for k, v in (extra or {}).items()})
    del proto.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = PREFIX + key, value
    proto.producer_name = "retrspect"
    proto.model_version = int(version.split(".")[0])
    data = proto.SerializeToString()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = name or kind
    path = directory / file_name(stem, data)
    for old in directory.glob(f"{stem}-*.onnx"):
        if old != path:
            old.unlink()
    path.write_bytes(data)
    from retrspect.ingest.infer import load_model
    load_model(path, threads=1)  # what ingest will load: refuse it here first
    return path


def shipped(directory=None, kind=None):
    """Paths of the model files (optionally of one kind) in ``directory``
    (default: the installed shipped models), sorted."""
    from retrspect.ingest.infer import SHIPPED_MODEL_DIR, load_model
    paths = sorted(Path(directory or SHIPPED_MODEL_DIR).glob("*-[0-9a-f]*.onnx"))
    if kind is None:
        return paths
    return [p for p in paths if load_model(p, threads=1).kind == kind]


def compare_with_torch(model, path, flux, weight, *, threads=2):
    """Largest |ONNX - torch| per output on the given inputs (NaNs must agree).

    Returns
    -------
    dict
        output name -> max abs difference, and ``"max_relative"``.
    """
    import torch

    from retrspect.ingest.infer import load_model
    onnx_model = load_model(path, threads=threads)
    names = [o.name for o in onnx_model.session.get_outputs()]
    got = onnx_model(flux, weight)
    with torch.inference_mode():
        want = [o.numpy() for o in model(torch.as_tensor(flux), torch.as_tensor(weight))]
    out = {}
    worst_rel = 0.0
    for name, a, b in zip(names, got, want):
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        if not np.array_equal(nan_a, nan_b):
            out[name] = float("inf")
            continue
        diff = np.abs(a[~nan_a] - b[~nan_b]) if (~nan_a).any() else np.zeros(1)
        out[name] = float(diff.max())
        scale = np.maximum(np.abs(b[~nan_b]), 1.0) if (~nan_b).any() else np.ones(1)
        worst_rel = max(worst_rel, float((diff / scale).max()))
    out["max_relative"] = worst_rel
    return out


# --------------------------------------------------------------------------
# Decoders: published latent -> spectrum, cut out of an exported VAE
# --------------------------------------------------------------------------

def decoder_bytes(encoder_path) -> bytes:
    """The decoder of an exported VAE (``vae`` or a VAE ``space``) as ONNX.

    The VAE's graph decodes its raw posterior mean into ``reconstruction``;
    that subgraph is cut out (``onnx.utils.Extractor``) and preceded by the
    inverse of the published latent's standardisation, ``latent *
    latent_scale + latent_shift``, so the decoder takes the latent exactly
    as ingest publishes it: input ``latent`` [batch, latent_dim], output
    ``reconstruction`` [batch, npix] (normalised flux on the encoder's grid).
    The metadata names the encoder (``encoder``: its model id).
    """
    import onnx
    from onnx import helper

    from retrspect.ingest.infer import read_description
    description = read_description(Path(encoder_path))
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(encoder_path)))
    graph = proto.graph
    unshift = [n for n in graph.node if n.op_type == "Sub" and "latent_shift" in n.input]
    if len(unshift) != 1 or "reconstruction" not in [o.name for o in graph.output]:
        raise ValueError(f"{encoder_path}: not a VAE with a standardised latent "
                         "and a reconstruction output")
    raw_mean = unshift[0].input[0]
    decoder = onnx.utils.Extractor(proto).extract_model([raw_mean], ["reconstruction"])
    initializers = {i.name: i for i in graph.initializer}
    decoder.graph.initializer.extend([initializers["latent_scale"],
                                      initializers["latent_shift"]])
    dim = int(description.metadata["latent_dim"])
    del decoder.graph.input[:]
    decoder.graph.input.append(helper.make_tensor_value_info(
        "latent", onnx.TensorProto.FLOAT, ["batch", dim]))
    decoder.graph.node.insert(0, helper.make_node(
        "Mul", ["latent", "latent_scale"], ["latent_unstandardised"]))
    decoder.graph.node.insert(1, helper.make_node(
        "Add", ["latent_unstandardised", "latent_shift"], [raw_mean]))
    props = {
        "model": "decoder", "encoder": description.model_id,
        "version": description.version, "grid": description.metadata["grid"],
        "latent_dim": str(dim), "normalisation": description.metadata["normalisation"],
        "outputs": json.dumps({"reconstruction": "[batch, npix] normalised flux on the "
                                                 "encoder's grid, decoded from the "
                                                 "published latent"}),
    }
    del decoder.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = decoder.metadata_props.add()
        entry.key, entry.value = PREFIX + key, value
    decoder.producer_name = "retrspect"
    onnx.checker.check_model(decoder)
    return decoder.SerializeToString()


def export_decoder(encoder_path, directory=None) -> Path:
    """Write the decoder of ``encoder_path`` into ``<directory>/decoders``
    (default: the encoder's own directory), replacing older decoders of
    the same encoder name."""
    encoder_path = Path(encoder_path)
    data = decoder_bytes(encoder_path)
    folder = Path(directory or encoder_path.parent) / DECODER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem_of(encoder_path.name)
    path = folder / file_name(stem, data)
    for old in folder.glob(f"{stem}-*.onnx"):
        if old != path:
            old.unlink()
    path.write_bytes(data)
    return path
