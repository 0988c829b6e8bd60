"""ONNX Runtime sessions for the shipped models, batched, GPU when it loads.

Ingest knows the models only as ONNX files carrying their own metadata
(``retrspect.*`` metadata properties, see ``models/``): the grid they expect,
what they output, their name, version and content hash.  Nothing here
imports torch.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ingest.preprocess import Grid

log = logging.getLogger("retrspect.infer")

#: the model kinds ingest runs, and the outputs each must have
MODEL_OUTPUTS = {
    "vae": ("latent_mean", "latent_logvar", "reconstruction", "anomaly"),
    "classifier": ("probabilities", "uncertainty"),
    "velocity": ("redshift", "redshift_error"),
}
#: where the shipped models live (inside the installed ``models`` package)
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models"


class ModelError(ValueError):
    """A model file that ingest cannot use; str() names the file."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason

    def __reduce__(self):  # crosses process boundaries from ingest workers
        return type(self), (self.path, self.reason)


def _cuda_libraries_missing() -> list[str]:
    """CUDA libraries onnxruntime's CUDA provider needs that do not load."""
    missing = []
    for name in ("libcudart.so.12", "libcublasLt.so.12", "libcudnn.so.9"):
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing


@lru_cache(maxsize=1)
def choose_providers() -> tuple[tuple[str, ...], str]:
    """The execution providers to use, and one line saying why.

    CUDA (or TensorRT) only when the provider is built in *and* its
    libraries load; otherwise the CPU, without onnxruntime's error block.
    ``RETRSPECT_PROVIDER=cpu`` forces the CPU.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if os.environ.get("RETRSPECT_PROVIDER", "").lower() == "cpu":
        return ("CPUExecutionProvider",), "CPU (forced by RETRSPECT_PROVIDER=cpu)"
    if "CUDAExecutionProvider" not in available:
        return ("CPUExecutionProvider",), "CPU (this onnxruntime has no CUDA provider)"
    missing = _cuda_libraries_missing()
    if missing:
        return (("CPUExecutionProvider",),
                f"CPU (CUDA provider present but {', '.join(missing)} "
                "not loadable: no usable GPU stack)")
    return (("CUDAExecutionProvider", "CPUExecutionProvider"),
            "CUDA (GPU libraries load)")


def default_threads() -> int:
    """Intra-op threads: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class OnnxModel:
    """One shipped model: its session and the metadata ingest relies on."""

    path: Path
    kind: str
    version: str
    content_hash: str
    grid: Grid
    metadata: dict
    session: object = field(repr=False)

    @property
    def model_id(self) -> str:
        """Name, version and content hash: what every result row records."""
        return f"{self.kind}-{self.version}-{self.content_hash}"

    @property
    def latent_dim(self) -> int | None:
        value = self.metadata.get("retrspect.latent_dim")
        return int(value) if value is not None else None

    @property
    def labels(self) -> list[str] | None:
        value = self.metadata.get("retrspect.labels")
        return json.loads(value) if value is not None else None

    @property
    def metric(self) -> str | None:
        return self.metadata.get("retrspect.metric")

    def run(self, flux: np.ndarray, weight: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for a batch (flux, weight: float32 [n, npix])."""
        names = MODEL_OUTPUTS[self.kind]
        values = self.session.run(list(names), {"flux": flux, "weight": weight})
        return dict(zip(names, values))


def load_model(path: Path, threads: int | None = None) -> OnnxModel:
    """Open one ONNX file and check its metadata against the contract."""
    import onnxruntime as ort

    path = Path(path)
    providers, _ = choose_providers()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    # ingest workers and the DaCHS server share the cores with other work:
    # threads that spin while waiting take CPU from it (measured: the VAE
    # 104 ms a batch spinning, 70 ms not, on a busy 2-core machine)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as err:  # onnxruntime raises its own untyped errors
        raise ModelError(path, f"not a loadable ONNX model ({err})") from err
    meta = dict(session.get_modelmeta().custom_metadata_map)
    kind = meta.get("retrspect.model")
    if kind not in MODEL_OUTPUTS:
        raise ModelError(path, f"retrspect.model is {kind!r}, expected one of "
                               f"{sorted(MODEL_OUTPUTS)}")
    try:
        grid = Grid.from_json(meta["retrspect.grid"])
        version = meta["retrspect.version"]
    except (KeyError, ValueError, TypeError) as err:
        raise ModelError(path, f"missing or bad grid/version metadata ({err})")
    inputs = {i.name: i.shape for i in session.get_inputs()}
    for name in ("flux", "weight"):
        if name not in inputs or inputs[name][-1] != grid.npix:
            raise ModelError(path, f"input {name!r} must be [batch, "
                                   f"{grid.npix}] (the grid's npix), found "
                                   f"{inputs.get(name)}")
    outputs = {o.name for o in session.get_outputs()}
    lacking = [name for name in MODEL_OUTPUTS[kind] if name not in outputs]
    if lacking:
        raise ModelError(path, f"{kind} model lacks outputs {lacking}")
    content_hash = path.stem.rsplit("-", 1)[-1]
    return OnnxModel(path, kind, version, content_hash, grid, meta, session)


@dataclass
class ModelSet:
    """The models ingest runs: at most one of each kind."""

    models: dict[str, OnnxModel]

    @classmethod
    def load(cls, model_dir: Path | None = None, threads: int | None = None,
             latent_dim: int | None = None,
             latent_metric: str | None = None) -> "ModelSet":
        """Load every ``*.onnx`` in ``model_dir``; refuse inconsistent sets.

        ``latent_dim`` and ``latent_metric`` describe the table's vector
        column and its index: a VAE with another dimension, or trained for
        another distance, is refused here, before anything is written.
        """
        model_dir = Path(model_dir or DEFAULT_MODEL_DIR)
        models: dict[str, OnnxModel] = {}
        for path in sorted(model_dir.glob("*.onnx")):
            model = load_model(path, threads)
            if model.kind in models:
                raise ModelError(path, f"a second {model.kind} model beside "
                                       f"{models[model.kind].path.name}")
            models[model.kind] = model
        vae = models.get("vae")
        if latent_dim is not None and vae is not None \
                and vae.latent_dim != latent_dim:
            raise ModelError(vae.path, f"latent dimension {vae.latent_dim} "
                                       f"does not match the table's "
                                       f"vector({latent_dim}) column")
        if latent_metric is not None and vae is not None \
                and vae.metric != latent_metric:
            raise ModelError(vae.path, f"latent metric {vae.metric!r} is not "
                                       f"the {latent_metric!r} the table's "
                                       f"index is built for")
        _, reason = choose_providers()
        log.info("onnxruntime: %s; models: %s", reason,
                 ", ".join(m.model_id for m in models.values()) or "none")
        return cls(models)

    @property
    def grids(self) -> dict[str, Grid]:
        """Each distinct grid once, keyed by its JSON (preprocess per grid)."""
        return {m.grid.to_json(): m.grid for m in self.models.values()}

    def run(self, prepared: dict[str, tuple[np.ndarray, np.ndarray]]
            ) -> dict[str, dict[str, np.ndarray]]:
        """Run every model on a batch prepared per grid (see :attr:`grids`)."""
        return {kind: model.run(*prepared[model.grid.to_json()])
                for kind, model in self.models.items()}
