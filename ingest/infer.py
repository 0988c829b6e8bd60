"""ONNX Runtime sessions for the shipped models, batched, GPU when it loads.

Ingest knows the models only as ONNX files under the contract of
:mod:`retrspect.ingest.contract`: the grid they expect, what they output,
their name, version and content hash.  :func:`models_for_table` is the one
answer to "which models fill this table".  Nothing here imports torch.
"""
from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from retrspect.ingest import contract
from retrspect.ingest.errors import ModelError

log = logging.getLogger("retrspect.infer")

#: where the shipped models live (inside the installed ``retrspect.models``)
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models"


def model_dir_from_environment() -> Path:
    """``RETRSPECT_MODEL_DIR`` if set, else the shipped models."""
    value = os.environ.get("RETRSPECT_MODEL_DIR")
    return Path(value) if value else DEFAULT_MODEL_DIR


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
    """One model file under the contract, with its ONNX Runtime session."""

    description: contract.ModelDescription
    session: object = field(repr=False)

    def __getattr__(self, name):
        # path, kind, version, content_hash, grid, metadata, model_id,
        # latent_dim, metric, labels, info: what the file says of itself
        if name in ("description", "session"):
            raise AttributeError(name)
        return getattr(self.description, name)

    def run(self, flux: np.ndarray, weight: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for a batch (flux, weight: float32 [n, npix]) by name."""
        names = contract.OUTPUTS[self.kind]
        values = self.session.run(list(names), {"flux": flux, "weight": weight})
        return dict(zip(names, values))

    def __call__(self, flux, weight) -> list[np.ndarray]:
        """All outputs in the file's order (as torch modules return them)."""
        return self.session.run(None, {"flux": np.asarray(flux, np.float32),
                                       "weight": np.asarray(weight, np.float32)})


def load_model(path, threads: int | None = None) -> OnnxModel:
    """Open one ONNX file, checked against :mod:`retrspect.ingest.contract`
    (its content hash included) before anything runs it.

    Raises
    ------
    ModelError
    """
    import onnxruntime as ort

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelError(path, f"cannot read the model file ({err})") from None
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
        session = ort.InferenceSession(data, options, providers=list(providers))
    except Exception as err:  # onnxruntime raises its own untyped errors
        raise ModelError(path, f"not a loadable ONNX model ({err})") from err
    description = contract.describe(
        path, data, dict(session.get_modelmeta().custom_metadata_map),
        {i.name: i.shape for i in session.get_inputs()},
        {o.name for o in session.get_outputs()})
    return OnnxModel(description, session)


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
        model_dir = Path(model_dir or model_dir_from_environment())
        models: dict[str, OnnxModel] = {}
        for path in sorted(model_dir.glob("*.onnx")):
            model = load_model(path, threads)
            if model.kind in models:
                raise ModelError(path, f"a second {model.kind} model beside "
                                       f"{models[model.kind].path.name}")
            models[model.kind] = model
        if "vae" in models:
            contract.check_fits(
                models["vae"].description, latent_dim=latent_dim,
                metric=latent_metric,
                column=f"the table's vector({latent_dim}) column and its index")
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


@lru_cache(maxsize=8)
def models_for_table(latent_dim: int | None, latent_metric: str | None,
                     model_dir: Path | None = None,
                     threads: int | None = None) -> ModelSet:
    """The models whose results fill a table with this latent column,
    loaded once per process (ingest workers, the server, health checks).

    ``model_dir`` None: :func:`model_dir_from_environment`.
    """
    return ModelSet.load(model_dir, threads=threads, latent_dim=latent_dim,
                         latent_metric=latent_metric)
