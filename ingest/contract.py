"""The ONNX model contract: what a model file must be for retrspect to run it.

Export (:mod:`retrspect.models.export`) writes files to this contract;
ingest, search by example and the health check load them through
:func:`retrspect.ingest.infer.load_model`, which checks them here.  Nothing
here imports onnx, onnxruntime or torch.

A model file is ``<stem>-<first 12 hex of sha256(file)>.onnx`` (the hash is
verified on every load) with these ``metadata_props``:

==========================  ===============================================
``retrspect.model``         the kind: a key of :data:`OUTPUTS`
``retrspect.version``       semantic version of the model, e.g. "1.0.0"
``retrspect.grid``          :meth:`retrspect.ingest.preprocess.Grid.to_json`
``retrspect.normalisation`` :data:`retrspect.ingest.preprocess.NORMALISATION`
``retrspect.opset``         the ONNX opset
``retrspect.training_data`` what it learned from (text)
``retrspect.source_commit`` git commit of the code that exported it
``retrspect.metrics``       held-out metrics (JSON)
``retrspect.outputs``       output names and meaning (JSON)
``retrspect.latent_dim``    VAE only: length of ``latent_mean``
``retrspect.metric``        VAE only: the distance the latent is for
                            (a key of :data:`METRICS`)
``retrspect.labels``        classifier only: JSON list of class names
``retrspect.anomaly_ceiling``  VAE, optional: the 99th percentile of the
                            ``anomaly`` of the validation split's real
                            spectra; a spectrum beyond it is outside the
                            models' domain (:func:`class_is_known`)
``retrspect.min_class_coverage``  classifier, optional: the least grid
                            coverage at which its class is published
                            (chosen on validation stars)
==========================  ===============================================

Inputs of every model: ``flux`` and ``weight``, float32 ``[batch, npix]``
as :func:`retrspect.ingest.preprocess.prepare` returns them (dynamic batch
axis).  Outputs: :data:`OUTPUTS` of its kind.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from retrspect.ingest.errors import ModelError
from retrspect.ingest.preprocess import Grid

#: metadata key prefix
PREFIX = "retrspect."
#: the inputs of every model
INPUTS = ("flux", "weight")
#: output names per model kind
OUTPUTS = {
    "vae": ("latent_mean", "latent_logvar", "reconstruction", "anomaly"),
    "classifier": ("probabilities", "uncertainty"),
    "velocity": ("redshift", "redshift_error"),
}
#: what each output means (copied into ``retrspect.outputs``)
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
#: distances a latent may be trained for, and pgvector's operator for each
METRICS = {"l2": "<->", "cosine": "<=>"}
#: metadata entries holding JSON
JSON_ENTRIES = ("metrics", "labels", "outputs")


def content_hash(data: bytes) -> str:
    """The hash a model file's name carries: 12 hex digits of its sha256."""
    return hashlib.sha256(data).hexdigest()[:12]


def file_name(stem: str, data: bytes) -> str:
    """The contract's name for a model file with these bytes."""
    return f"{stem}-{content_hash(data)}.onnx"


@dataclass(frozen=True)
class ModelDescription:
    """What a model file says of itself, checked against the contract.

    ``metadata`` holds the ``retrspect.*`` entries with the prefix removed,
    as text; :attr:`info` has the JSON entries parsed.
    """

    path: Path
    kind: str
    version: str
    content_hash: str
    grid: Grid
    metadata: dict = field(repr=False)

    @property
    def model_id(self) -> str:
        """Name, version and content hash: what every result row records."""
        return f"{self.kind}-{self.version}-{self.content_hash}"

    @property
    def latent_dim(self) -> int | None:
        value = self.metadata.get("latent_dim")
        return int(value) if value is not None else None

    @property
    def metric(self) -> str | None:
        return self.metadata.get("metric")

    @property
    def labels(self) -> list[str] | None:
        value = self.metadata.get("labels")
        return json.loads(value) if value is not None else None

    @property
    def anomaly_ceiling(self) -> float | None:
        value = self.metadata.get("anomaly_ceiling")
        return float(value) if value is not None else None

    @property
    def min_class_coverage(self) -> float | None:
        value = self.metadata.get("min_class_coverage")
        return float(value) if value is not None else None

    @property
    def info(self) -> dict:
        """The metadata with JSON entries parsed and ``grid`` a Grid."""
        out = dict(self.metadata)
        for key in JSON_ENTRIES:
            if key in out:
                out[key] = json.loads(out[key])
        out["grid"] = self.grid
        if "latent_dim" in out:
            out["latent_dim"] = int(out["latent_dim"])
        return out


def describe(path, data: bytes, properties: dict[str, str],
             inputs: dict[str, list], outputs: set[str]) -> ModelDescription:
    """Check a model file against the contract and say what it is.

    Parameters
    ----------
    path : path-like
        The file (its name carries the content hash).
    data : bytes
        Its content.
    properties : dict
        Its ``metadata_props`` (with the prefix).
    inputs : dict
        Input name -> shape.
    outputs : set
        Output names.

    Raises
    ------
    ModelError
        Naming the file and what breaks the contract.
    """
    path = Path(path)
    digest = content_hash(data)
    if "-" not in path.stem or path.stem.rsplit("-", 1)[1] != digest:
        raise ModelError(path, f"content hash is {digest}, not the one in the "
                               "file name (file changed after export?)")
    meta = {key[len(PREFIX):]: value for key, value in properties.items()
            if key.startswith(PREFIX)}
    kind = meta.get("model")
    if kind not in OUTPUTS:
        raise ModelError(path, f"retrspect.model is {kind!r}, expected one of "
                               f"{sorted(OUTPUTS)}")
    try:
        grid = Grid.from_json(meta["grid"])
        version = meta["version"]
        for key in JSON_ENTRIES:
            if key in meta:
                json.loads(meta[key])
    except (KeyError, ValueError, TypeError) as err:
        raise ModelError(path, f"missing or bad metadata ({err})") from None
    for name in INPUTS:
        if name not in inputs or inputs[name][-1] != grid.npix:
            raise ModelError(path, f"input {name!r} must be [batch, "
                                   f"{grid.npix}] (the grid's npix), found "
                                   f"{inputs.get(name)}")
    lacking = [name for name in OUTPUTS[kind] if name not in outputs]
    if lacking:
        raise ModelError(path, f"{kind} model lacks outputs {lacking}")
    if kind == "vae":
        if meta.get("metric") not in METRICS:
            raise ModelError(path, f"retrspect.metric is {meta.get('metric')!r}, "
                                   f"expected one of {sorted(METRICS)}")
        if not str(meta.get("latent_dim", "")).isdigit():
            raise ModelError(path, "retrspect.latent_dim is missing or not a "
                                   "whole number")
    for key in ("anomaly_ceiling", "min_class_coverage"):
        try:
            if key in meta and not float(meta[key]) >= 0:  # NaN fails too
                raise ValueError(meta[key])
        except ValueError:
            raise ModelError(path, f"retrspect.{key} is {meta[key]!r}, not a "
                                   "number >= 0") from None
    return ModelDescription(path, kind, version, digest, grid, meta)


def class_is_known(coverage: float, anomaly: float | None, *,
                   min_class_coverage: float | None,
                   anomaly_ceiling: float | None) -> bool:
    """The committed out-of-domain rule (issue 13): a class is published
    only for a spectrum the models can place.

    It cannot be placed when it covers less of the classifier's grid than
    the classifier's ``min_class_coverage``, or when the VAE reconstructs it
    worse (``anomaly``) than 99% of the validation split's real spectra
    (``anomaly_ceiling``; a NaN anomaly counts as beyond).  Such a spectrum
    keeps its class probabilities, but its class is NULL: unknown.  A
    model without the metadata entry does not apply that half of the rule.
    """
    if min_class_coverage is not None and not coverage >= min_class_coverage:
        return False
    if anomaly_ceiling is not None and not (anomaly is not None and anomaly <= anomaly_ceiling):
        return False
    return True


def check_fits(model: ModelDescription, *, kind: str | None = None,
               grid: Grid | None = None, latent_dim: int | None = None,
               metric: str | None = None, column: str | None = None) -> None:
    """Refuse a model that does not fit what the caller has: another kind,
    grid, latent dimension or metric.

    ``column`` names what the dimension and metric come from (e.g. "the
    table's vector(32) column"), for the message.

    Raises
    ------
    ModelError
    """
    of = f" of {column}" if column else ""
    if kind is not None and model.kind != kind:
        raise ModelError(model.path, f"is a {model.kind!r} model, expected "
                                     f"{kind!r}")
    if grid is not None and model.grid != grid:
        raise ModelError(model.path, f"model grid {model.grid} does not match "
                                     f"the expected grid {grid}")
    if latent_dim is not None and model.latent_dim != latent_dim:
        raise ModelError(model.path, f"latent dimension {model.latent_dim} "
                                     f"does not match the expected "
                                     f"{latent_dim}{of}")
    if metric is not None and model.metric != metric:
        raise ModelError(model.path, f"latent metric {model.metric!r} is not "
                                     f"the expected {metric!r}{of}")
