"""ONNX export with metadata and hashed file names; loading with checks.

A shipped model is ``models/<name>-<first 12 hex of sha256(file)>.onnx``
with ``metadata_props``:

==========================  ===============================================
``retrspect.model``         "vae", "classifier" or "velocity"
``retrspect.version``       semantic version of the model, e.g. "1.0.0"
``retrspect.grid``          :meth:`ingest.preprocess.Grid.to_json`
``retrspect.normalisation`` :data:`ingest.preprocess.NORMALISATION`
``retrspect.opset``         the ONNX opset (:data:`OPSET`)
``retrspect.training_data`` what it learned from (text)
``retrspect.source_commit`` git commit of the code that exported it
``retrspect.metrics``       held-out metrics (JSON)
``retrspect.outputs``       output names and meaning (JSON)
``retrspect.latent_dim``    VAE only: length of ``latent_mean``
``retrspect.metric``        VAE only: "l2" (the distance the latent is for)
``retrspect.labels``        classifier only: JSON list of class names
==========================  ===============================================

Inputs of every model: ``flux`` and ``weight``, float32 ``[batch, npix]``
as :func:`ingest.preprocess.prepare` returns them (dynamic batch axis).
"""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path

import numpy as np

from ingest.preprocess import NORMALISATION, Grid

#: The pinned ONNX opset of every shipped model.
OPSET = 17

#: Output names per model kind (the contract ingest relies on).
OUTPUTS = {
    "vae": ("latent_mean", "latent_logvar", "reconstruction", "anomaly"),
    "classifier": ("probabilities", "uncertainty"),
    "velocity": ("redshift", "redshift_error"),
}

OUTPUT_DOC = {
    "latent_mean": "[batch, latent_dim] posterior mean: the published latent vector",
    "latent_logvar": "[batch, latent_dim] posterior log-variance (its spread)",
    "reconstruction": "[batch, npix] normalised flux decoded from latent_mean",
    "anomaly": "[batch] mean over covered pixels of (flux - reconstruction)^2 / "
               "(sigma^2 + 0.01^2); sigma from weight, or DER_SNR when all weights "
               "are 1 (no errors); NaN when nothing is covered",
    "probabilities": "[batch, n_classes] temperature-scaled ensemble-mean class "
                     "probabilities, classes in retrspect.labels order; uniform when "
                     "less than 5% of the grid is covered",
    "uncertainty": "[batch] predictive entropy of probabilities in nats "
                   "(0 .. ln n_classes)",
    "redshift": "[batch] z in the observed frame relative to vacuum rest wavelengths; "
                "NaN when less than 5% of the grid is covered or nothing correlates",
    "redshift_error": "[batch] 1-sigma error of z (statistical and systematic floor)",
}

#: Metadata key prefix.
PREFIX = "retrspect."


class ModelMismatch(ValueError):
    """A model file that does not fit what the caller expects."""


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
    from onnx import helper
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
    props.update({k: str(v) for k, v in (extra or {}).items()})
    del proto.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = PREFIX + key, value
    proto.producer_name = "retrspect"
    proto.model_version = int(version.split(".")[0])
    data = proto.SerializeToString()
    digest = hashlib.sha256(data).hexdigest()[:12]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = name or kind
    path = directory / f"{stem}-{digest}.onnx"
    for old in directory.glob(f"{stem}-*.onnx"):
        if old != path:
            old.unlink()
    path.write_bytes(data)
    return path


def read_metadata(path) -> dict:
    """The ``retrspect.*`` metadata of an ONNX file, prefix stripped.

    JSON-valued entries (grid, metrics, labels, outputs) stay strings;
    :func:`describe` parses them.
    """
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key[len(PREFIX):]: p.value for p in proto.metadata_props
            if p.key.startswith(PREFIX)}


def describe(path) -> dict:
    """:func:`read_metadata` with the JSON entries parsed and the grid a Grid."""
    meta = read_metadata(path)
    out = dict(meta)
    for key in ("metrics", "labels", "outputs"):
        if key in out:
            out[key] = json.loads(out[key])
    if "grid" in out:
        out["grid"] = Grid.from_json(out["grid"])
    if "latent_dim" in out:
        out["latent_dim"] = int(out["latent_dim"])
    return out


def shipped(directory=None, kind=None):
    """Paths of the shipped ONNX files (optionally of one kind), sorted."""
    directory = Path(directory) if directory else Path(__file__).resolve().parent
    paths = sorted(directory.glob("*-[0-9a-f]*.onnx"))
    if kind is None:
        return paths
    return [p for p in paths if read_metadata(p).get("model") == kind]


def check(path, *, kind=None, grid: Grid | None = None, latent_dim: int | None = None):
    """Refuse a model that does not fit: wrong kind, grid or latent dimension.

    Also checks the file name's hash against its content.

    Raises
    ------
    ModelMismatch
        With a message naming the file, what was expected and what it has.
    """
    path = Path(path)
    data = path.read_bytes()
    stem = path.stem
    digest = hashlib.sha256(data).hexdigest()[:12]
    if "-" not in stem or stem.rsplit("-", 1)[1] != digest:
        raise ModelMismatch(f"{path.name}: content hash is {digest}, not the one in "
                            "the file name (file changed after export?)")
    meta = describe(path)
    if kind is not None and meta.get("model") != kind:
        raise ModelMismatch(f"{path.name}: is a {meta.get('model')!r} model, expected {kind!r}")
    if grid is not None and meta.get("grid") != grid:
        raise ModelMismatch(f"{path.name}: model grid {meta.get('grid')} does not match "
                            f"the expected grid {grid}")
    if latent_dim is not None and meta.get("latent_dim") != latent_dim:
        raise ModelMismatch(f"{path.name}: latent dimension {meta.get('latent_dim')} "
                            f"does not match the expected {latent_dim} (e.g. the "
                            "vector(n) column)")
    return meta


def session(path, *, threads=2, **expected):
    """An ONNX Runtime CPU session for a checked model (see :func:`check`)."""
    import onnxruntime as ort
    check(path, **expected)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_with_torch(model, path, flux, weight, *, threads=2):
    """Largest |ONNX - torch| per output on the given inputs (NaNs must agree).

    Returns
    -------
    dict
        output name -> max abs difference, and ``"max_relative"``.
    """
    import torch
    sess = session(path, threads=threads)
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(None, {"flux": np.asarray(flux, np.float32),
                          "weight": np.asarray(weight, np.float32)})
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
