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

#: where the shipped models live (inside the installed ``retrspect.models``,
#: which a reinstall replaces)
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent.parent / "models"
#: the archive's models directory: the shipped models (copied in by
#: ``retrspect deploy``) and the spaces the archive trained on its own
#: spectra (``retrspect train-space``), kept across reinstalls
ARCHIVE_MODEL_DIR = (Path(os.environ.get("RETRSPECT_GAVO_ROOT", "/var/gavo"))
                     / "retrspect" / "models")


def model_dir_from_environment() -> Path:
    """The models directory ingest, the server and training use:
    ``RETRSPECT_MODEL_DIR`` if set, else the archive's (once deploy made
    it), else the shipped models."""
    value = os.environ.get("RETRSPECT_MODEL_DIR")
    if value:
        return Path(value)
    return ARCHIVE_MODEL_DIR if ARCHIVE_MODEL_DIR.is_dir() else SHIPPED_MODEL_DIR


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

    @property
    def preparation(self) -> str:
        """Which preparation of a batch it reads: its grid, and the frame."""
        return f"{self.frame}:{self.grid.to_json()}"

    def run(self, flux: np.ndarray, weight: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for a batch (flux, weight: float32 [n, npix]) by name."""
        names = self.description.outputs
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
    data = _read(path)
    description = read_description(path, data)
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
    return OnnxModel(description, session)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ModelError(path, f"cannot read the model file ({err})") from None


def _parse(path: Path, data: bytes):
    from onnx.onnx_ml_pb2 import ModelProto
    proto = ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as err:  # protobuf raises its own DecodeError
        raise ModelError(path, f"not a readable ONNX model ({err})") from None
    return proto


def read_metadata(path) -> dict[str, str]:
    """A model file's retrspect metadata (key prefix removed), unchecked:
    for files the contract does not describe, such as decoders."""
    path = Path(path)
    return {p.key[len(contract.PREFIX):]: p.value
            for p in _parse(path, _read(path)).metadata_props
            if p.key.startswith(contract.PREFIX)}


def read_description(path, data: bytes | None = None) -> contract.ModelDescription:
    """What a model file says of itself, checked against the contract,
    without an inference session (the RD's generated space tables need
    only this, in every DaCHS process).

    Raises
    ------
    ModelError
    """
    path = Path(path)
    data = _read(path) if data is None else data
    proto = _parse(path, data)

    def shape(value_info):
        return [d.dim_value if d.HasField("dim_value") else d.dim_param
                for d in value_info.type.tensor_type.shape.dim]

    initialisers = {t.name for t in proto.graph.initializer}
    return contract.describe(
        path, data, {p.key: p.value for p in proto.metadata_props},
        {i.name: shape(i) for i in proto.graph.input if i.name not in initialisers},
        {o.name: shape(o) for o in proto.graph.output})


def installed_descriptions(model_dir: Path | None = None) -> dict[str, contract.ModelDescription]:
    """Key (kind, or a space's name) -> description of every model file
    in the models directory that follows the contract; a file that does
    not is logged and left out (the import refuses it by name)."""
    model_dir = Path(model_dir or model_dir_from_environment())
    return _descriptions(model_dir, _listing(model_dir))


@lru_cache(maxsize=4)
def _descriptions(model_dir: Path, files: tuple) -> dict[str, contract.ModelDescription]:
    found = {}
    for name, _ in files:
        try:
            description = read_description(model_dir / name)
        except ModelError as err:
            log.warning("%s", err)
            continue
        found.setdefault(description.key, description)
    return found


@dataclass
class ModelSet:
    """The models ingest runs: at most one of each built-in kind (keyed by
    kind) and any number of plug-in spaces (keyed by the space's name)."""

    models: dict[str, OnnxModel]

    @classmethod
    def load(cls, model_dir: Path | None = None,
             threads: int | None = None) -> "ModelSet":
        """Load every ``*.onnx`` in ``model_dir``; refuse inconsistent sets
        (two of a kind, two of a space), before anything is written."""
        model_dir = Path(model_dir or model_dir_from_environment())
        models: dict[str, OnnxModel] = {}
        for path in sorted(model_dir.glob("*.onnx")):
            model = load_model(path, threads)
            if model.key in models:
                what = ("space " + model.key if model.kind == contract.SPACE_KIND
                        else model.kind + " model")
                raise ModelError(path, f"a second {what} beside "
                                       f"{models[model.key].path.name}")
            models[model.key] = model
        _, reason = choose_providers()
        log.info("onnxruntime: %s; models: %s", reason,
                 ", ".join(m.model_id for m in models.values()) or "none")
        return cls(models)

    @property
    def builtin(self) -> dict[str, OnnxModel]:
        """The shipped kinds (vae, classifier, velocity): ml_results."""
        return {key: m for key, m in self.models.items()
                if m.kind != contract.SPACE_KIND}

    @property
    def spaces(self) -> dict[str, OnnxModel]:
        """The plug-in spaces by name: a table each."""
        return {key: m for key, m in self.models.items()
                if m.kind == contract.SPACE_KIND}

    def select(self, only: str | None) -> "ModelSet":
        """The models one table needs: ``None`` all; ``"generic"`` the
        built-in kinds; a space's name that space, with the velocity model
        when the space reads spectra in their rest frame (it gives z).

        Raises
        ------
        ModelError
            No such space.
        """
        if only is None:
            return self
        if only == contract.GENERIC_SPACE:
            return ModelSet(self.builtin)
        if only not in self.spaces:
            raise ModelError(only, f"no space {only!r} among the installed "
                                   f"models (spaces: {sorted(self.spaces)})")
        chosen = {only: self.models[only]}
        if chosen[only].frame == "rest" and "velocity" in self.models:
            chosen["velocity"] = self.models["velocity"]
        return ModelSet(chosen)

    def run(self, prepared: dict[str, tuple[np.ndarray, np.ndarray]],
            keys=None) -> dict[str, dict[str, np.ndarray]]:
        """Run models (``keys``, default all) on a batch prepared per
        :attr:`OnnxModel.preparation`."""
        return {key: self.models[key].run(*prepared[self.models[key].preparation])
                for key in (self.models if keys is None else keys)}


def installed_models(model_dir: Path | None = None,
                     threads: int | None = None) -> ModelSet:
    """Every model in the models directory, loaded once per process
    (ingest workers, the server, health checks) and again when the
    directory's files change (a model added, replaced or removed).

    ``model_dir`` None: :func:`model_dir_from_environment`.
    """
    model_dir = Path(model_dir or model_dir_from_environment())
    return _load_models(model_dir, _listing(model_dir), threads)


def _listing(model_dir: Path) -> tuple:
    """The model files of a directory, with their modification times."""
    return tuple((p.name, p.stat().st_mtime_ns)
                 for p in sorted(model_dir.glob("*.onnx")))


@lru_cache(maxsize=8)
def _load_models(model_dir: Path, listing: tuple, threads: int | None) -> ModelSet:
    return ModelSet.load(model_dir, threads=threads)


def models_for_table(latent_dim: int | None, latent_metric: str | None,
                     model_dir: Path | None = None,
                     threads: int | None = None) -> ModelSet:
    """The installed models, once checked against the generic space's
    table: its vector(``latent_dim``) column and the ``latent_metric`` its
    HNSW index is for.

    Raises
    ------
    ModelError
        The VAE does not fit the table.
    """
    models = installed_models(model_dir, threads)
    if "vae" in models.models:
        contract.check_fits(
            models.models["vae"].description, latent_dim=latent_dim,
            metric=latent_metric,
            column=f"the table's vector({latent_dim}) column and its index")
    return models
