"""The explorer's server side: decoders, latent dimensions, web assets.

The explorer (``resdir/explorer``, served by the ``explorer`` service) is a
page that talks to the archive's own interfaces: TAP for neighbours and
values (the ADQL it runs is shown to the user), SODA for the spectra
(``FORMAT=text/csv``), ``byexample`` for uploads and for the spectra
nearest to a point in a latent space, and two small services defined
here: ``decode`` (a latent vector to its decoded spectrum, through the
space's decoder ONNX file) and ``dimensions`` (a space's latent dimensions,
most informative first, with the archive's range of each).

The plotting library is plotly.js from the ``plotly`` package on PyPI,
copied into the served directory at deploy: no page loads anything from
another host.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from retrspect.ingest.errors import RetrspectError
from retrspect.ingest.latents import latent_information

#: the files deploy copies from installed packages into the explorer's
#: static directory: (package, file in the package) -> served name
VENDORED = {("plotly", "package_data/plotly.min.js"): "vendor/plotly.min.js"}
#: the static directory of the explorer service, in the resource directory
STATIC_DIR = "explorer"
#: archive percentiles bounding each slider
SLIDER_RANGE = (1.0, 99.0)


class ExplorerError(RetrspectError, ValueError):
    """A request the explorer's services cannot answer; the message says why."""


def install_assets(resdir: Path) -> list[str]:
    """Copy the vendored JavaScript into ``resdir/explorer/vendor`` (from the
    installed packages, so it comes from the registry with the venv).
    Idempotent; returns what was copied."""
    import importlib.util
    copied = []
    for (package, inner), served in VENDORED.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ExplorerError(f"the {package} package is not installed; "
                                f"the explorer needs its {inner}")
        source = Path(spec.submodule_search_locations[0]) / inner
        target = Path(resdir) / STATIC_DIR / served
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.stat().st_size != source.stat().st_size \
                or target.read_bytes() != source.read_bytes():
            shutil.copyfile(source, target)
            copied.append(served)
    return copied


# ---- decoders --------------------------------------------------------------

@dataclass(frozen=True)
class Decoder:
    """A space's decoder file: published latent -> normalised flux on the
    space's grid, in the space's frame."""
    path: Path
    encoder: str
    wavelength: np.ndarray
    frame: str
    session: object

    def __call__(self, latent) -> np.ndarray:
        vector = np.asarray(latent, dtype=np.float32).reshape(1, -1)
        return self.session.run(["reconstruction"], {"latent": vector})[0][0]


@lru_cache(maxsize=8)
def _decoder_for(model_id: str, frame: str, model_dir: Path) -> Decoder:
    import onnxruntime as ort
    from retrspect.ingest.contract import DECODER_DIR
    from retrspect.ingest.infer import read_metadata
    from retrspect.ingest.preprocess import Grid
    for path in sorted((model_dir / DECODER_DIR).glob("*.onnx")):
        meta = read_metadata(path)
        if meta.get("encoder") == model_id:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.log_severity_level = 3
            session = ort.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
            return Decoder(path, model_id, Grid.from_json(meta["grid"]).wavelength,
                           frame, session)
    raise ExplorerError(f"the model {model_id} has no decoder in "
                        f"{model_dir / DECODER_DIR} (retrspect decoders writes one)")


def decoder(space: str) -> Decoder:
    """The decoder of a space's installed model."""
    from retrspect.ingest.infer import model_dir_from_environment
    from retrspect.vo_services.similarity import NoSpaceError, model_of
    try:
        model = model_of(space)
    except NoSpaceError as err:
        raise ExplorerError(str(err)) from None
    return _decoder_for(model.model_id, model.frame, Path(model_dir_from_environment()))


def decode(space: str, latent_text: str) -> tuple[np.ndarray, np.ndarray]:
    """(wavelength, flux) decoded from a latent vector literal of ``space``."""
    from retrspect.vo_services.similarity import (NoSpaceError, VectorLiteralError,
                                                  parse_vector_literal, space_column)
    try:
        column = space_column(space)
        values = parse_vector_literal(latent_text, column.dim)
    except (NoSpaceError, VectorLiteralError) as err:
        raise ExplorerError(str(err)) from None
    chosen = decoder(space)
    return chosen.wavelength, chosen(values)


# ---- latent dimensions -----------------------------------------------------

@dataclass(frozen=True)
class Dimension:
    dim: int
    rank: int
    information: float | None   # bits, where the space stores posterior widths
    spread: float               # standard deviation over the archive
    low: float
    median: float
    high: float


def _archive_latents(space: str) -> tuple[np.ndarray, np.ndarray | None]:
    from gavo import base
    from retrspect.vo_services.similarity import space_column
    column = space_column(space)
    sigma_column = ", latent_sigma" if column.table == "retrspect.ml_results" else ""
    with base.getTableConn() as conn:
        rows = list(conn.query(f"SELECT {column.column}{sigma_column} FROM "
                               f"{column.table} WHERE {column.column} IS NOT NULL"))
    mean = np.array([np.asarray(r[0], np.float64) for r in rows])
    if not sigma_column:
        return mean, None
    sigma = np.array([r[1] if r[1] is not None else [np.nan] * mean.shape[1]
                      for r in rows], np.float64)
    good = np.isfinite(sigma).all(1) & (sigma > 0).all(1)
    return mean[good], sigma[good]


@lru_cache(maxsize=8)
def dimensions(space: str) -> tuple[Dimension, ...]:
    """A space's latent dimensions, most informative first: by I(x; z_d)
    over the archive's spectra where the space keeps posterior widths
    (``generic``), otherwise by the archive's variance (for the linear and
    PCA spaces, whose posterior width is the same for every spectrum, the
    same order).  Cached per process: the archive changes by ingest, which
    restarts the servers."""
    from retrspect.vo_services.similarity import NoSpaceError, space_column
    try:
        space_column(space)
    except NoSpaceError as err:
        raise ExplorerError(str(err)) from None
    mean, sigma = _archive_latents(space)
    if len(mean) < 2:
        raise ExplorerError(f"the space {space} has fewer than two vectors")
    spread = mean.std(0)
    information = None if sigma is None else latent_information(
        mean, 2 * np.log(sigma), samples=2, max_points=800, rng=np.random.default_rng(0))
    key = information if information is not None else spread
    order = np.argsort(-key, kind="stable")
    low, median, high = np.percentile(mean, [SLIDER_RANGE[0], 50, SLIDER_RANGE[1]], axis=0)
    return tuple(Dimension(int(d), rank, None if information is None else float(information[d]),
                           float(spread[d]), float(low[d]), float(median[d]), float(high[d]))
                 for rank, d in enumerate(order, start=1))


# ---- the services' cores ---------------------------------------------------

def _space_param(input_table) -> str:
    from retrspect.ingest.contract import GENERIC_SPACE
    return input_table.getParam("space") or GENERIC_SPACE


def decode_core(core, input_table, query_meta):
    """pythonCore of ``decode``: rows (wavelength, flux) of the decoded spectrum."""
    from gavo import base, rsc
    space = _space_param(input_table)
    try:
        wavelength, flux = decode(space, input_table.getParam("latent") or "")
    except ExplorerError as err:
        raise base.ValidationError(str(err), "latent") from None
    rows = [{"wavelength": float(w), "flux": float(f)} for w, f in zip(wavelength, flux)]
    table = rsc.TableForDef(core.outputTable, rows=rows)
    table.setParam("space", space)
    table.setParam("frame", decoder(space).frame)
    return table


def dimensions_core(core, input_table, query_meta):
    """pythonCore of ``dimensions``: one row per latent dimension, most
    informative first, with the archive's range for a slider."""
    from gavo import base, rsc
    space = _space_param(input_table)
    try:
        dims = dimensions(space)
    except ExplorerError as err:
        raise base.ValidationError(str(err), "space") from None
    table = rsc.TableForDef(core.outputTable, rows=[d.__dict__ for d in dims])
    table.setParam("has_decoder", _has_decoder(space))
    return table


def _has_decoder(space: str) -> bool:
    try:
        decoder(space)
    except ExplorerError:
        return False
    return True
