"""Build the ``pca_blue`` latent space: a third-party model under the contract.

This script stands where an archive's own ML team stands: it knows
retrspect only through ``models/CONTRACT.md`` and the public preprocessing
(``retrspect.ingest.preprocess.prepare_batch``), fits a model with numpy
alone, writes it as an ONNX graph with the ``onnx`` package, and drops the
file into the models directory.  The next ``retrspect import`` embeds every
spectrum that covers its grid and publishes the space; no code changes.

The model is a principal-component encoder of the blue rest-frame window
3900-4500 Angstrom (Ca II H and K, H delta, the G band, H gamma, He I
4471: the region of MK classification), 512 pixels at R = 2000:

    latent   = (m * (flux - mean)) @ components.T        (16 numbers)
    residual = sum(m * (flux - (latent @ components + mean))^2) / sum(m)

with m = (weight > 0), so a masked pixel counts as the mean spectrum.  It
reads spectra in their rest frame: ingest shifts each spectrum by the
redshift the velocity model measured first, so galaxies at any redshift
land on the same grid.  It is fitted on every archive spectrum (under
``--data``) that covers at least 90% of that window once shifted.

    python scripts/make_pca_space.py            # writes models/pca_blue-<hash>.onnx
    python scripts/make_pca_space.py --check    # is the shipped file what this makes?
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SPACE = "pca_blue"
VERSION = "1.0.0"
WINDOW = (3900.0, 4500.0)
NPIX = 512
RESOLVING_POWER = 2000.0
DIMENSION = 16
MIN_COVERAGE = 0.9
#: noise for the self-retrieval figure of the card (2% of the median flux)
NOISE = 0.02


def archive_spectra(data_dir: Path):
    """(collection, spectrum) for every spectrum of the staged archive files."""
    from retrspect.ingest.errors import ReaderError
    from retrspect.ingest.sources import read_source
    from tqdm import tqdm

    found = []
    paths = sorted(p for p in data_dir.glob("*/*") if p.is_file())
    for path in tqdm(paths, desc="read", unit="file", file=sys.stderr):
        try:
            found += [(path.parent.name, s) for s in read_source(str(path))]
        except ReaderError as err:
            print(f"skipped {err}", file=sys.stderr)
    return found


def rest_frame_inputs(spectra, grid):
    """flux, weight on the window in each spectrum's rest frame, shifted by
    the redshift ingest publishes (the shipped velocity model's; none, so no
    coverage, where it publishes NULL)."""
    from retrspect.ingest.infer import ModelSet
    from retrspect.ingest.pipeline import infer_batch, published_redshift
    from retrspect.ingest.preprocess import prepare_batch

    velocity = ModelSet({"velocity": ModelSet.load().models["velocity"]})
    z = published_redshift(velocity, infer_batch(spectra, velocity), len(spectra))
    flux, weight = prepare_batch(spectra, grid, z)
    return flux, weight


def fit(flux, weight):
    """Mean and the first DIMENSION principal components (rows), with the
    fraction of the variance each explains.  Gaps are filled with the mean
    (iterated twice), as the ONNX graph treats them."""
    mask = weight > 0
    mean = np.average(flux, axis=0, weights=mask.astype(float) + 1e-12)
    for _ in range(2):
        filled = np.where(mask, flux, mean)
        mean = filled.mean(axis=0)
    centred = np.where(mask, flux - mean, 0.0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    # a fixed sign per component (largest loading positive): reproducible
    signs = np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])
    vt = vt * signs[:, None]
    variance = singular ** 2 / np.sum(singular ** 2)
    return (mean.astype(np.float32), vt[:DIMENSION].astype(np.float32),
            variance[:DIMENSION])


def encode(flux, weight, mean, components):
    """The graph's latent in numpy (for the card's figures)."""
    return ((weight > 0) * (flux - mean)) @ components.T


def onnx_model(mean, components, grid, metadata: dict) -> bytes:
    """The encoder as an ONNX graph: inputs flux and weight [batch, npix];
    outputs latent [batch, DIMENSION] and residual [batch]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    npix = grid.npix
    nodes = [
        helper.make_node("Greater", ["weight", "zero"], ["covered"]),
        helper.make_node("Cast", ["covered"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["flux", "mean"], ["centred"]),
        helper.make_node("Mul", ["m", "centred"], ["masked"]),
        helper.make_node("MatMul", ["masked", "components_t"], ["latent"]),
        helper.make_node("MatMul", ["latent", "components"], ["back"]),
        helper.make_node("Sub", ["masked", "back"], ["diff"]),
        helper.make_node("Mul", ["m", "diff"], ["masked_diff"]),
        helper.make_node("Mul", ["masked_diff", "masked_diff"], ["squared"]),
        helper.make_node("ReduceSum", ["squared", "axis"], ["sum_squared"], keepdims=0),
        helper.make_node("ReduceSum", ["m", "axis"], ["n_covered"], keepdims=0),
        helper.make_node("Max", ["n_covered", "one"], ["n_safe"]),
        helper.make_node("Div", ["sum_squared", "n_safe"], ["residual"]),
    ]
    initialisers = [
        numpy_helper.from_array(np.float32(0.0).reshape(()), "zero"),
        numpy_helper.from_array(np.float32(1.0).reshape(()), "one"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
        numpy_helper.from_array(mean, "mean"),
        numpy_helper.from_array(np.ascontiguousarray(components.T), "components_t"),
        numpy_helper.from_array(components, "components"),
    ]
    graph = helper.make_graph(
        nodes, SPACE,
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", npix])
         for name in ("flux", "weight")],
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT,
                                       ["batch", DIMENSION]),
         helper.make_tensor_value_info("residual", TensorProto.FLOAT, ["batch"])],
        initialisers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="retrspect scripts/make_pca_space.py")
    model.ir_version = 8
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"retrspect.{key}", value
    onnx.checker.check_model(model)
    return model.SerializeToString()


def self_retrieval(latent, flux, weight, mean, components, rng) -> float:
    """Fraction of spectra whose noisy copy (2% of the normalised flux's
    median, per pixel) has the original as its nearest neighbour."""
    scale = np.median(np.where(weight > 0, np.abs(flux), np.nan), axis=1)
    noisy = flux + rng.standard_normal(flux.shape) * (NOISE * scale)[:, None]
    query = encode(noisy, weight, mean, components)
    d = ((query[:, None, :] - latent[None, :, :]) ** 2).sum(-1)
    return float(np.mean(np.argmin(d, axis=1) == np.arange(len(latent))))


def source_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def card(figures: dict, model_name: str) -> str:
    counts = ", ".join(f"{name} {n}" for name, n in sorted(figures["collections"].items()))
    variance = figures["explained_variance"]
    return f"""# Latent space `{SPACE}` ({model_name})

A principal-component encoder of the blue rest-frame window
{WINDOW[0]:.0f}-{WINDOW[1]:.0f} Angstrom (vacuum; Ca II H and K, H delta,
the G band, H gamma, He I 4471), {NPIX} pixels at R = {RESOLVING_POWER:.0f}.
It was built by `scripts/make_pca_space.py` with numpy and the `onnx`
package, outside `models/`, as a third party would build a space under
`models/CONTRACT.md`.

- **Vectors:** {DIMENSION} dimensions, Euclidean (l2) distance; published in
  `retrspect.space_{SPACE}` (column `latent`).
- **Frame:** rest. Ingest shifts each spectrum by the redshift the velocity
  model measured before putting it on the grid; a spectrum without a
  measured redshift has no vector here.
- **Coverage:** a spectrum gets a vector when its good pixels cover at least
  {MIN_COVERAGE:.0%} of the window in its rest frame.
- **Fitted on** {figures['n_fit']} archive spectra that cover the window
  ({counts}); there is no held-out split: this space demonstrates the
  plug-in contract, it is not tuned for retrieval.
- **Variance explained** by the {DIMENSION} components:
  {sum(variance):.3f} (first three: {', '.join(f'{v:.3f}' for v in variance[:3])}).
- **Self-retrieval under noise** (a copy with Gaussian noise of
  {NOISE:.0%} of the median normalised flux per pixel finds its original
  first, among the fitted spectra): {figures['self_retrieval']:.3f}.
- **Scalar output** `residual`: mean squared residual of the reconstruction
  from the {DIMENSION} components over covered pixels (normalised flux units
  squared); large for spectra unlike the archive's.

Figures measured by the script on {figures['date']} from commit
{figures['source_commit'][:12]}.
"""


def check(out: Path, data: bytes, name: str) -> int:
    """Is the shipped file what this script makes?  Same metadata, and the
    same numbers to float32 rounding (another CPU's LAPACK may differ in
    the last bits, and so in the file's hash)."""
    import onnx
    from onnx import numpy_helper

    present = sorted(out.glob(f"{SPACE}-*.onnx"))
    if len(present) != 1:
        print(f"expected one {SPACE} file in {out}, found {[p.name for p in present]}")
        return 1
    built, shipped = onnx.load_from_string(data), onnx.load(str(present[0]))
    problems = []
    meta = [{p.key: p.value for p in m.metadata_props} for m in (built, shipped)]
    if meta[0] != meta[1]:
        problems.append(f"metadata differs in {sorted(k for k in meta[0] if meta[0].get(k) != meta[1].get(k))}")
    arrays = [{t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
              for m in (built, shipped)]
    for key, value in arrays[0].items():
        if not np.allclose(value, arrays[1].get(key), rtol=1e-4, atol=1e-6):
            problems.append(f"{key} differs")
    print(f"built {name}; shipped {present[0].name}: "
          + ("; ".join(problems) if problems else "the same model"))
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO / "resdir" / "data"),
                        help="the staged archive files (default: resdir/data)")
    parser.add_argument("--out", default=str(REPO / "models"),
                        help="the models directory (default: models/)")
    parser.add_argument("--check", action="store_true",
                        help="rebuild in memory and compare with the file in --out")
    args = parser.parse_args(argv)

    from retrspect.ingest.contract import file_name
    from retrspect.ingest.preprocess import NORMALISATION, Grid

    grid = Grid.spanning(*WINDOW, NPIX, resolving_power=RESOLVING_POWER)
    found = archive_spectra(Path(args.data))
    spectra = [s for _, s in found]
    flux, weight = rest_frame_inputs(spectra, grid)
    covered = (weight > 0).mean(axis=1) >= MIN_COVERAGE
    if covered.sum() < 4 * DIMENSION:
        print(f"only {covered.sum()} spectra cover the window; need "
              f"{4 * DIMENSION}", file=sys.stderr)
        return 1
    flux, weight = flux[covered], weight[covered]
    mean, components, variance = fit(flux, weight)
    latent = encode(flux, weight, mean, components)
    figures = {
        "n_fit": int(covered.sum()),
        "collections": dict(Counter(c for (c, _), ok in zip(found, covered) if ok)),
        "explained_variance": [round(float(v), 4) for v in variance],
        "self_retrieval": round(self_retrieval(latent, flux, weight, mean, components,
                                               np.random.default_rng(0)), 3),
        "source_commit": source_commit(),
        "date": subprocess.run(["date", "-u", "+%Y-%m-%d"], capture_output=True,
                               text=True).stdout.strip(),
    }
    metadata = {
        "model": "space", "space": SPACE, "version": VERSION,
        "grid": grid.to_json(), "frame": "rest", "medium": "vacuum",
        "min_coverage": str(MIN_COVERAGE), "normalisation": NORMALISATION,
        "latent_dim": str(DIMENSION), "metric": "l2",
        "training_data": (f"{figures['n_fit']} spectra of this archive covering "
                          f"{WINDOW[0]:.0f}-{WINDOW[1]:.0f} A (rest frame)"),
        "metrics": json.dumps({k: figures[k] for k in
                               ("n_fit", "explained_variance", "self_retrieval")}),
        "outputs": json.dumps({
            "latent": {"role": "latent", "metric": "l2",
                       "description": f"projection on the first {DIMENSION} "
                                      "principal components"},
            "residual": {"role": "scalar", "unit": "", "ucd": "stat.fit.residual",
                         "description": "mean squared residual of the "
                                        "reconstruction over covered pixels"}}),
        "opset": "17",
        # the numbers alone decide the file: the commit is in the card
        "source_commit": "scripts/make_pca_space.py",
    }
    data = onnx_model(mean, components, grid, metadata)
    name = file_name(SPACE, data)
    out = Path(args.out)
    if args.check:
        return check(out, data, name)
    for old in out.glob(f"{SPACE}-*.onnx"):
        old.unlink()
    (out / name).write_bytes(data)
    (out / "cards").mkdir(exist_ok=True)
    (out / "cards" / f"{SPACE}.md").write_text(card(figures, name))
    print(f"wrote {out / name} ({hashlib.sha256(data).hexdigest()[:12]}); "
          f"{figures['n_fit']} spectra, variance {sum(figures['explained_variance']):.3f}, "
          f"self-retrieval {figures['self_retrieval']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
