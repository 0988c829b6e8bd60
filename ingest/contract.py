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

A fourth kind, ``space``, is the plug-in point (``models/CONTRACT.md`` is
the document for model makers): an encoder of a latent space of its own,
whose ``retrspect.outputs`` maps each output to a role (:data:`ROLES`) and
so to columns of the space's table.  It also names its ``space``, ``frame``
and ``medium``, and may set ``min_coverage``.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from retrspect.ingest.errors import ModelError
from retrspect.ingest.preprocess import MIN_GRID_COVERAGE, Grid

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

#: the plug-in kind: an encoder of a latent space of its own
SPACE_KIND = "space"
#: the space the shipped VAE makes (its vectors are ml_results.latent)
GENERIC_SPACE = "generic"
#: what an output of a ``space`` model can be, and so which columns it fills
ROLES = {
    "latent": "[batch, dim] the space's vector (column latent, vector(dim)); "
              "exactly one; needs metric",
    "probabilities": "[batch, n] class probabilities (columns p_<label>); "
                     "needs labels, n of them",
    "scalar": "[batch] one number per spectrum (a column named like the "
              "output); needs unit and ucd",
}
#: frames a space can read spectra in: as observed, or shifted to rest by
#: the redshift the velocity model measures
FRAMES = ("observed", "rest")
#: wavelength media a grid can be in (retrspect's grids are vacuum)
MEDIA = ("vacuum",)
#: how a space, label or output name must look (it becomes SQL identifiers)
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,29}")
#: names a space cannot take: the generic space and the built-in kinds
RESERVED_SPACES = frozenset({GENERIC_SPACE, SPACE_KIND, *OUTPUTS})
#: columns every space table has, which outputs cannot be named
SPACE_COLUMNS = ("pubdid", "obs_id", "latent", "grid_coverage", "model")
#: least grid coverage for answers unless the model says otherwise
DEFAULT_MIN_COVERAGE = MIN_GRID_COVERAGE


@dataclass(frozen=True)
class OutputSpec:
    """One output of a ``space`` model and the column(s) it fills."""

    name: str
    role: str
    metric: str | None = None
    labels: tuple[str, ...] = ()
    unit: str = ""
    ucd: str = ""
    description: str = ""

    @property
    def columns(self) -> tuple[str, ...]:
        """The space table's columns this output fills."""
        if self.role == "latent":
            return ("latent",)
        if self.role == "probabilities":
            return tuple(f"p_{label}" for label in self.labels)
        return (self.name,)


def content_hash(data: bytes) -> str:
    """The hash a model file's name carries: 12 hex digits of its sha256."""
    return hashlib.sha256(data).hexdigest()[:12]


#: the folder of a models directory that holds decoders (published latent
#: -> spectrum, one per VAE; see models/CONTRACT.md); ingest does not run them
DECODER_DIR = "decoders"


def file_name(stem: str, data: bytes) -> str:
    """The contract's name for a model file with these bytes."""
    return f"{stem}-{content_hash(data)}.onnx"


def stem_of(name: str) -> str:
    """The stem of a model file's name (:func:`file_name`'s inverse):
    ``vae`` of ``vae-512933e338e7.onnx``."""
    return Path(name).stem.rsplit("-", 1)[0]


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
        """Name (the kind, or a plug-in's space), version and content hash:
        what every result row records."""
        name = self.metadata.get("space") if self.kind == SPACE_KIND else self.kind
        return f"{name}-{self.version}-{self.content_hash}"

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
    def key(self) -> str:
        """Its name among the installed models: the kind, or a plug-in's
        space."""
        return self.metadata["space"] if self.kind == SPACE_KIND else self.kind

    @property
    def space(self) -> str | None:
        """The latent space this model's vectors are in (None: it makes none)."""
        if self.kind == "vae":
            return GENERIC_SPACE
        return self.metadata.get("space")

    @property
    def frame(self) -> str:
        return self.metadata.get("frame", "observed")

    @property
    def medium(self) -> str:
        return self.metadata.get("medium", "vacuum")

    @property
    def min_coverage(self) -> float:
        """Least fraction of the grid a spectrum covers to get answers."""
        return float(self.metadata.get("min_coverage", DEFAULT_MIN_COVERAGE))

    @property
    def outputs(self) -> tuple[str, ...]:
        """The outputs ingest runs, in order."""
        if self.kind == SPACE_KIND:
            return tuple(spec.name for spec in self.output_specs)
        return OUTPUTS[self.kind]

    @cached_property
    def output_specs(self) -> list[OutputSpec]:
        """A ``space`` model's outputs with their roles (checked at load;
        parsed once, as ingest asks for them for every row)."""
        return output_specs(self.path, self.metadata) if self.kind == SPACE_KIND else []

    @property
    def latent_output(self) -> str:
        """The output holding the published vector."""
        if self.kind == "vae":
            return "latent_mean"
        return next(s.name for s in self.output_specs if s.role == "latent")

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
             inputs: dict[str, list], outputs: dict[str, list]) -> ModelDescription:
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
    outputs : dict
        Output name -> shape (dimensions as ints, or names for dynamic
        ones).

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
    if kind not in OUTPUTS and kind != SPACE_KIND:
        raise ModelError(path, f"retrspect.model is {kind!r}, expected one of "
                               f"{sorted([*OUTPUTS, SPACE_KIND])}")
    for key in ("grid", "version"):
        if not meta.get(key):
            raise ModelError(path, f"retrspect.{key} is missing")
    try:
        grid = Grid.from_json(meta["grid"])
    except ValueError as err:
        raise ModelError(path, f"retrspect.grid is not a grid ({err})") from None
    version = meta["version"]
    for key in JSON_ENTRIES:
        try:
            if key in meta:
                json.loads(meta[key])
        except ValueError as err:
            raise ModelError(path, f"retrspect.{key} is not JSON ({err})") from None
    for name in INPUTS:
        if name not in inputs or inputs[name][-1] != grid.npix:
            raise ModelError(path, f"input {name!r} must be [batch, "
                                   f"{grid.npix}] (the grid's npix), found "
                                   f"{inputs.get(name)}")
    if kind == SPACE_KIND:
        _check_space(path, meta, outputs)
    else:
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
    for key in ("anomaly_ceiling", "min_class_coverage", "min_coverage"):
        try:
            if key in meta and not float(meta[key]) >= 0:  # NaN fails too
                raise ValueError(meta[key])
        except ValueError:
            raise ModelError(path, f"retrspect.{key} is {meta[key]!r}, not a "
                                   "number >= 0") from None
    return ModelDescription(path, kind, version, digest, grid, meta)


def _check_space(path: Path, meta: dict, outputs: dict[str, list]) -> None:
    """The ``space`` kind's rules: name, frame, medium, and every output in
    ``retrspect.outputs`` with a known role and the shape the role needs."""
    def refuse(field_name: str, problem: str):
        raise ModelError(path, f"retrspect.{field_name} {problem}")

    name = meta.get("space")
    if name is None:
        refuse("space", "is missing (the space's name)")
    if not NAME_PATTERN.fullmatch(name) or name in RESERVED_SPACES:
        refuse("space", f"is {name!r}: a space name is lower-case letters, "
                        "digits and _ (at most 30, starting with a letter), "
                        f"and not one of {sorted(RESERVED_SPACES)}")
    if meta.get("frame") not in FRAMES:
        refuse("frame", f"is {meta.get('frame')!r}, expected one of {list(FRAMES)}")
    if meta.get("medium") not in MEDIA:
        refuse("medium", f"is {meta.get('medium')!r}, expected one of {list(MEDIA)}")
    if "min_coverage" in meta:
        try:
            if not 0 < float(meta["min_coverage"]) <= 1:
                raise ValueError
        except ValueError:
            refuse("min_coverage", f"is {meta['min_coverage']!r}, not a "
                                   "fraction in (0, 1]")
    specs = output_specs(path, meta)
    columns = set(SPACE_COLUMNS) - {"latent"}
    for spec in specs:
        if spec.name not in outputs:
            refuse("outputs", f"maps {spec.name!r}, which is not an output of "
                              f"the file (it has {sorted(outputs)})")
        shape = list(outputs[spec.name])
        want = {"latent": 2, "probabilities": 2, "scalar": 1}[spec.role]
        if len(shape) != want:
            refuse("outputs", f"maps {spec.name!r} as {spec.role}, which needs "
                              f"{want} dimension(s); the output's shape is {shape}")
        if spec.role == "latent":
            dim = shape[1]
            if not isinstance(dim, int):
                refuse("outputs", f"maps {spec.name!r} as latent; its second "
                                  f"dimension must be fixed, found {dim!r}")
            if meta.get("latent_dim") != str(dim):
                refuse("latent_dim", f"is {meta.get('latent_dim')!r} but output "
                                     f"{spec.name!r} has {dim} dimensions")
            if meta.get("metric") != spec.metric:
                refuse("metric", f"is {meta.get('metric')!r} but output "
                                 f"{spec.name!r} is mapped with metric {spec.metric!r}")
        if spec.role == "probabilities" and shape[1] != len(spec.labels):
            refuse("outputs", f"maps {spec.name!r} with {len(spec.labels)} "
                              f"labels; the output's shape is {shape}")
        clash = columns.intersection(spec.columns) - {"latent"}
        if clash:
            refuse("outputs", f"maps {spec.name!r} to column(s) "
                              f"{sorted(clash)}, which another output or the "
                              f"table already has")
        columns.update(spec.columns)


def output_specs(path, meta: dict) -> list[OutputSpec]:
    """The outputs a ``space`` model maps to columns, from its
    ``retrspect.outputs``; exactly one has the role ``latent``.

    Raises
    ------
    ModelError
        A field that breaks the contract, named.
    """
    def refuse(problem: str):
        raise ModelError(path, f"retrspect.outputs {problem}")

    try:
        mapping = json.loads(meta.get("outputs") or "null")
    except ValueError:
        refuse("is not JSON")
    if not isinstance(mapping, dict) or not mapping:
        refuse("is missing or not a JSON object of output name -> "
               "{\"role\": ...}")
    specs = []
    for name, entry in mapping.items():
        if not isinstance(entry, dict):
            refuse(f"entry {name!r} is not an object with a role")
        role = entry.get("role")
        if role not in ROLES:
            refuse(f"entry {name!r} has role {role!r}; known roles are "
                   f"{sorted(ROLES)}")
        if not NAME_PATTERN.fullmatch(name):
            refuse(f"entry {name!r}: an output name is lower-case letters, "
                   "digits and _ (it names a column)")
        spec = OutputSpec(name, role, description=str(entry.get("description", "")))
        if role == "latent":
            if entry.get("metric") not in METRICS:
                refuse(f"entry {name!r} (latent) has metric "
                       f"{entry.get('metric')!r}; expected one of {sorted(METRICS)}")
            spec = OutputSpec(name, role, metric=entry["metric"],
                              description=spec.description)
        elif role == "probabilities":
            labels = entry.get("labels")
            if (not isinstance(labels, list) or not labels
                    or not all(isinstance(x, str) and NAME_PATTERN.fullmatch(x)
                               for x in labels)
                    or len(set(labels)) != len(labels)):
                refuse(f"entry {name!r} (probabilities) needs labels: distinct "
                       "lower-case names")
            spec = OutputSpec(name, role, labels=tuple(labels),
                              description=spec.description)
        else:
            unit, ucd = entry.get("unit"), entry.get("ucd")
            if not isinstance(unit, str) or not isinstance(ucd, str) or not ucd:
                refuse(f"entry {name!r} (scalar) needs a unit (\"\" for none) "
                       "and a ucd")
            spec = OutputSpec(name, role, unit=unit, ucd=ucd,
                              description=spec.description)
        specs.append(spec)
    latents = [spec.name for spec in specs if spec.role == "latent"]
    if len(latents) != 1:
        refuse(f"maps {len(latents)} outputs as latent ({latents}); a space "
               "has exactly one")
    return specs


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
