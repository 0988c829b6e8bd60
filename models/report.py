"""``retrspect analyse``: analysis of the shipped models, plots, benchmark, cards.

Everything here runs the *shipped ONNX files* (ONNX Runtime, CPU), so the
plots and cards describe exactly what ingest runs.  The checkpoints in the
work directory add what ONNX files do not hold: loss histories, the full
metric dictionaries, and the torch modules the benchmark compares against.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from retrspect.ingest.infer import load_model
from retrspect.ingest.preprocess import MODEL_GRID
from retrspect.models import analysis as A
from retrspect.models import catalogue, observation
from retrspect.models import evaluate as E
from retrspect.models import export as X

PARAMETERS = ("Teff", "log g", "[Fe/H]", "RV")


def run(model, flux, weight, batch=256):
    outs = [model(flux[s:s + batch], weight[s:s + batch]) for s in range(0, len(flux), batch)]
    return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]


def _load_checkpoints(workdir):
    from retrspect.models.train import load_checkpoint
    out = {}
    for name in ("vae", "classifier", "velocity"):
        path = Path(workdir) / f"{name}.pt"
        if path.exists():
            out[name] = load_checkpoint(path)
    return out


def analyse(models_dir, workdir, *, threads=2, benchmark=True, log=print):
    """Run the analysis; return a dict with the written plots and cards."""
    models_dir = Path(models_dir)
    plots_dir = models_dir / "plots"
    cards_dir = models_dir / "cards"
    bench_dir = models_dir / "benchmarks"
    started = time.perf_counter()
    files = shipped_files(models_dir)
    models = {kind: load_model(path, threads) for kind, path in files.items()}
    checkpoints = _load_checkpoints(workdir)
    items = catalogue.load_catalogue()
    flux, weight = E.prepared(items)
    log(f"analyse: {len(items)} real spectra prepared")

    # ---- VAE: informative dimensions and mutual information ------------
    mean, logvar, rec, anomaly = run(models["vae"], flux, weight)
    stars = np.array([i.kind == "star" for i in items])
    # Sedaghat's MAD rule is about the posterior means on the prior's scale:
    # undo the published standardisation (MI and I(x;z) do not care).
    standard = json.loads(models["vae"].info.get("latent_standardisation", "null") or "null")
    raw = mean if standard is None else mean * np.array(standard["scale"]) + np.array(standard["shift"])
    mad_values, mad_informative = A.mad_rule(raw[stars])
    information = A.latent_information(mean[stars], logvar[stars])
    info_informative = information > A.INFORMATION_THRESHOLD
    labelled = np.array([i.kind == "star" and bool(i.teff) and i.logg is not None
                         and i.feh is not None for i in items])
    params = np.array([[i.teff, i.logg, i.feh] for i, ok in zip(items, labelled) if ok], float)
    z_lab = mean[labelled]
    # RV: the libraries are in the rest frame, so inject known velocities
    rng = np.random.default_rng(7)
    star_items = [i for i in items if i.kind == "star"]
    rv = rng.uniform(-300, 300, len(star_items))
    shifted = [observation.observe(i.wave, i.flux, i.good, observation.Observation(z=float(observation.velocity_to_z(v))),
                         rng, native_r=i.spectrum.meta["resolving_power"])
               for i, v in zip(star_items, rv)]
    fs = np.zeros((len(shifted), MODEL_GRID.npix), np.float32)
    ws = np.zeros_like(fs)
    for row, s in enumerate(shifted):
        fs[row], ws[row] = observation.prepare_observed(s)
    z_rv = run(models["vae"], fs, ws)[0]
    mi_ksg = np.column_stack([A.mi_table(z_lab, params, PARAMETERS[:3]),
                              A.mi_table(z_rv, rv[:, None], ["RV"])])
    mi_hist = np.column_stack([A.mi_table(z_lab, params, PARAMETERS[:3], estimator="hist"),
                               A.mi_table(z_rv, rv[:, None], ["RV"], estimator="hist")])
    log(f"analyse: latent dimensions informative by MAD > 0.02: {int(mad_informative.sum())}, "
        f"by I(x;z) > {A.INFORMATION_THRESHOLD} bit: {int(info_informative.sum())}")

    order = np.argsort(-information)
    plots = {}
    teff = params[:, 0]
    plots["latent_pairs"] = A.plot_latent_pairs(
        z_lab, teff, order[:5], plots_dir / "latent_pairs.png",
        title="VAE latent means of real stars (5 dims with most I(x;z))")
    plots["mi_heatmap"] = A.plot_mi_heatmap(
        mi_ksg, list(PARAMETERS), order, mad_values, information,
        plots_dir / "mi_heatmap.png", title="MI (KSG, bits): latent dim x parameter")
    examples = _reconstruction_examples(items, flux, weight, rec, anomaly)
    plots["reconstructions"] = A.plot_reconstructions(
        MODEL_GRID.wavelength, examples, plots_dir / "reconstructions.png")

    # ---- classifier --------------------------------------------------------
    clf_metrics = E.classifier_metrics(_TorchLike(models["classifier"]), items)
    plots["confusion"] = A.plot_confusion(
        clf_metrics["confusion_matrix"], catalogue.CLASSES, plots_dir / "confusion.png",
        title=f"held-out real spectra: star accuracy {clf_metrics['test_star_accuracy']:.3f}")
    low, high = clf_metrics["expected_calibration_error_95"]
    plots["reliability"] = A.plot_reliability(
        clf_metrics["reliability"], plots_dir / "reliability.png",
        title=f"{clf_metrics['n_test_stars']} held-out stars: ECE "
              f"{clf_metrics['expected_calibration_error']:.3f} ({low:.3f}-{high:.3f})")
    domain = E.domain_metrics(_TorchLike(models["vae"]), _TorchLike(models["classifier"]), items,
                              ceiling=models["vae"].anomaly_ceiling,
                              min_coverage=models["classifier"].min_class_coverage)

    # ---- velocity ----------------------------------------------------------
    vel_ckpt = checkpoints.get("velocity")
    injections = Path(workdir) / "velocity_injections.npz"
    if vel_ckpt is not None and injections.exists():
        arrays = np.load(injections)
        plots["velocity"] = A.plot_velocity(
            arrays["fgk_snr50_delta"], arrays["fgk_snr50_truth"],
            vel_ckpt["metrics"]["manga"]["spaxels"], plots_dir / "velocity.png",
            title="held-out FGK MILES stars, injected RV at S/N 50; MaNGA spaxels")
    histories = {n: c["history"] for n, c in checkpoints.items() if c.get("history")}
    if histories:
        plots["training"] = A.plot_training(histories, plots_dir / "training.png")

    analysis = {
        "n_stars": int(stars.sum()), "n_labelled": int(labelled.sum()),
        "latent_dim": int(mean.shape[1]),
        "mad": mad_values.tolist(), "mad_informative": np.flatnonzero(mad_informative).tolist(),
        "information_bits": information.tolist(),
        "information_informative": np.flatnonzero(info_informative).tolist(),
        "parameters": list(PARAMETERS),
        "mi_ksg_bits": mi_ksg.tolist(), "mi_histogram_bits": mi_hist.tolist(),
        "classifier_onnx": E.public(clf_metrics),
        "domain": domain,
        "catalogue_counts": catalogue_counts(items),
    }
    sweep = bench_dir / "vae_supervise_sweep.json"
    if sweep.exists():
        analysis["vae_supervise_sweep"] = json.loads(sweep.read_text())
        plots["supervision_sweep"] = A.plot_supervision_sweep(
            analysis["vae_supervise_sweep"], plots_dir / "supervision_sweep.png")
    for key, name in (("vae_learning_curve", "vae_learning_curve.json"),
                      ("vae_experiments", "issue13_experiments.json")):
        if (bench_dir / name).exists():
            analysis[key] = json.loads((bench_dir / name).read_text())
    plots_dir.mkdir(parents=True, exist_ok=True)
    (plots_dir / "latent_analysis.json").write_text(json.dumps(analysis, indent=1) + "\n")

    # ---- benchmark ----------------------------------------------------------
    bench = None
    if benchmark and all(n in checkpoints for n in files):
        bench = benchmark_shipped(files, workdir, flux, weight, threads=threads,
                                  out=bench_dir / "onnx_vs_torch.json", log=log)
    elif (bench_dir / "onnx_vs_torch.json").exists():
        bench = json.loads((bench_dir / "onnx_vs_torch.json").read_text())

    from retrspect.models import cards
    equality = bench_dir / "onnx_vs_torch_outputs.json"
    written = cards.write_all(cards_dir, files, models, checkpoints, analysis, bench,
                              json.loads(equality.read_text()) if equality.exists() else None)
    for path in list(plots.values()):
        size = Path(path).stat().st_size
        if size > 300_000:
            log(f"warning: {Path(path).name} is {size / 1e3:.0f} kB")
    log(f"analyse: done in {time.perf_counter() - started:.0f} s")
    return {"plots": plots, "cards": written, "analysis": analysis, "benchmark": bench}


def catalogue_counts(items):
    """Counts of the labelled catalogue that the cards quote.

    Stars with two spectra (one ``star_id``: MILES and STELIB spellings of
    one star agree), the MaNGA spaxels, and the O-star spectra and how many
    of them are test spectra (the classifier's O figure rests on those).
    """
    spectra = Counter(i.star_id for i in items if i.kind == "star")
    o_stars = [i for i in items if i.label == "O"]
    return {"stars_with_two_spectra": sum(n == 2 for n in spectra.values()),
            "manga_spaxels": sum(i.collection == "MaNGA" for i in items),
            "o_star_spectra": len(o_stars),
            "o_star_spectra_test": sum(i.split == "test" for i in o_stars)}


def shipped_files(models_dir):
    """kind -> the one shipped ONNX file of each kind in ``models_dir``."""
    files = {}
    for kind in ("vae", "classifier", "velocity"):
        found = X.shipped(models_dir, kind)
        if len(found) != 1:
            raise RuntimeError(f"expected one shipped {kind} model in {models_dir}, "
                               f"found {[p.name for p in found]}")
        files[kind] = found[0]
    return files


def benchmark_shipped(files, workdir, flux, weight, *, threads=2, out, log=print):
    """ONNX Runtime against eager torch (the checkpoints in ``workdir``) on
    256 of the prepared spectra, in both thread-wait configurations."""
    from retrspect.models.benchmark import compare
    missing = [n for n in files if not (Path(workdir) / f"{n}.pt").exists()]
    if missing:
        raise RuntimeError(f"no checkpoint for {', '.join(missing)} in {workdir}: "
                           "run `retrspect train` first (torch needs the trained modules)")
    pick = np.random.default_rng(0).choice(len(flux), 256, replace=len(flux) < 256)
    bench = compare(workdir, files, flux[pick], weight[pick], threads=threads, out=out)
    for name, result in bench["configurations"].items():
        b = result["all_models"]
        log(f"benchmark ({name}): ONNX {b['onnx_ms_per_spectrum']:.3f} ms/spectrum "
            f"for all models, torch {b['torch_ms_per_spectrum']:.3f}; "
            f"speed-up {b['speedup_torch_over_onnx']:.2f}x")
    return bench


class _TorchLike:
    """Lets evaluate.run (which wants a torch-style module) call an ONNX model."""

    def __init__(self, model):
        self.model = model
        self.temperature = float(model.info["metrics"].get("temperature", float("nan")))

    def __call__(self, flux, weight):
        import torch
        out = self.model(np.asarray(flux), np.asarray(weight))
        return [torch.as_tensor(o) for o in out]


def _reconstruction_examples(items, flux, weight, rec, anomaly):
    """A few held-out spectra of different kinds for the reconstruction plot."""
    wanted = []

    def first(predicate):
        for n, item in enumerate(items):
            if predicate(item) and n not in wanted:
                return n
        return None

    for pick in (
        lambda i: i.split == "test" and i.collection == "MILES" and i.label == "A",
        lambda i: i.split == "test" and i.collection == "MILES" and i.label == "G",
        lambda i: i.split == "test" and i.collection == "MILES" and i.label == "M",
        lambda i: i.split == "test" and i.collection == "STELIB" and i.label == "K",
        lambda i: i.collection == "MaNGA",
        lambda i: i.obs_id == "linetools_sdssj2202_1236",
    ):
        n = first(pick)
        if n is not None:
            wanted.append(n)
    out = []
    for n in wanted:
        item = items[n]
        label = f"{item.obs_id} ({item.label or item.kind}, {item.split})"
        out.append((label, flux[n], weight[n], rec[n], float(anomaly[n])))
    return out

