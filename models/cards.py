"""Model cards (markdown), written by ``retrspect analyse``: a template plus data.

As in Hugging Face model cards (``ModelCard.from_template(card_data,
template_path)``), each card is a markdown template,
``models/cards/templates/<name>.md``, filled with a context of figures.  The
prose, including the conditional paragraphs, lives in the templates; this
module only gathers and formats the numbers and chooses which paragraphs
apply.  Every number comes from data, so a retrained model cannot carry last
month's figures:

* the ONNX metadata (``meta``: metrics, grid, labels) and the ONNX graph
  (trunk layers);
* the checkpoint's full metrics and training config, when there is one;
  without it, the metadata metrics, the analysis dict (the shipped
  classifier's held-out metrics, the supervision sweep) and the training
  code's defaults (:class:`~retrspect.models.train.TrainConfig`);
* the analysis dict, the benchmark and the ONNX-vs-torch equality record;
* module constants and argument defaults of the training code (splits,
  thresholds, scan set-up), and :data:`TARGETS`;
* ``models/benchmarks/card_records.json`` for figures measured or looked up
  once that nothing else stores; each entry says where it comes from.

Templates use :class:`string.Template` (``$name``), not ``str.format_map``:
a ``$name`` is only a name, with no format spec, attribute or index, so all
formatting stays here and a template is prose; ``$`` never occurs in the
cards while braces could (JSON, LaTeX); and ``substitute`` raises on a
missing name, so no placeholder can be left unfilled.

After the card body a template holds named fragments, each introduced by a
line ``<!-- line: name -->`` (joined into one line, so the template can
wrap it) or ``<!-- block: name -->`` (used as written).  Figures a card
cannot know are written "n/a".
"""
from __future__ import annotations

import inspect
import json
import math
import re
import statistics
import string
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

from retrspect.ingest.preprocess import C_KMS
from retrspect.models import analysis as A
from retrspect.models import card_sections as S
from retrspect.models import catalogue, nets, synthetic
from retrspect.models import evaluate as E
from retrspect.models import velocity as V
from retrspect.models.train import TrainConfig

TARGETS = {
    "teff": 0.03, "logg": 0.3, "feh": 0.25, "accuracy": 0.90,
    "rv_kms": 5.0, "manga_dz": 5e-4, "speedup": 2.0,
}

#: Where the templates and the record of once-measured figures live.
TEMPLATE_DIR = Path(__file__).resolve().parent / "cards" / "templates"
RECORDS = Path(__file__).resolve().parent / "benchmarks" / "card_records.json"

#: How many latent dimensions the card lists by information (a choice of
#: presentation, not a figure).
LISTED_DIMENSIONS = 8
#: The MK subclass the classifier card uses to show an ordinal soft target.
SOFT_TARGET_EXAMPLE = "G8"
#: Labels that are not stellar classes.
EXTRAGALACTIC = ("galaxy", "qso")

_MARKER = re.compile(r"^<!-- (line|block): ([\w.-]+) -->$", re.MULTILINE)
_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
          "nine", "ten", "eleven", "twelve")
_FRACTIONS = {2: "half", 3: "third", 4: "quarter"}


# --------------------------------------------------------------------------
# Templates and records
# --------------------------------------------------------------------------

def load_template(name, directory=TEMPLATE_DIR):
    """The body and the fragments of one card template.

    Fragments keep the conditional prose in the template too, so the
    template (not this module) is where every sentence of a card is read
    and checked for typed-in numbers.

    Parameters
    ----------
    name : str
        "vae", "classifier" or "velocity".
    directory : path, optional

    Returns
    -------
    body : str
        The card up to the first HTML comment at the start of a line.
    fragments : dict of str
        Named fragments; a "line" fragment is its lines joined by spaces, so
        the template can wrap a paragraph the card writes as one line.
    """
    text = (Path(directory) / f"{name}.md").read_text(encoding="utf-8")
    start = re.search(r"^<!--", text, re.MULTILINE)
    body = text[:start.start()] if start else text
    fragments = {}
    markers = list(_MARKER.finditer(text))
    for n, marker in enumerate(markers):
        end = markers[n + 1].start() if n + 1 < len(markers) else len(text)
        chunk = text[marker.end():end].strip("\n")
        if marker.group(1) == "line":
            chunk = " ".join(chunk.split("\n"))
        fragments[marker.group(2)] = chunk
    return body.rstrip("\n") + "\n", fragments


def load_records(path=RECORDS):
    """The once-measured figures the cards quote.

    Parameters
    ----------
    path : path, optional
        ``card_records.json``; default the one beside this module, which is
        in a checkout's ``models/benchmarks/`` but not in an installed package
        (:func:`write_all` reads the one of the models directory analysed).

    Returns
    -------
    dict
        name -> value (each value's source stays in the file, for readers).
    """
    figures = json.loads(Path(path).read_text(encoding="utf-8"))["figures"]
    return {name: entry["value"] for name, entry in figures.items()}


class _Card:
    """One template being filled: its fragments rendered with a context."""

    def __init__(self, name, records):
        self.body, self.fragments = load_template(name)
        self.records = load_records() if records is None else records

    def fragment(self, name, context):
        return string.Template(self.fragments[name]).substitute(context)

    def render(self, context):
        return string.Template(self.body).substitute(context)


# --------------------------------------------------------------------------
# Formatting (every figure reaches a template as a string)
# --------------------------------------------------------------------------

def _pass(ok):
    return "met" if ok else "**missed**"


def _fmt(x, digits=3):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _num(x, spec):
    """``x`` formatted by ``spec``; "n/a" when unknown."""
    return "n/a" if x is None else format(x, spec)


def _pct(x, spec=".2f"):
    """A fraction as a percentage figure (without the % sign)."""
    return "n/a" if x is None else format(100 * x, spec)


def _sci(x):
    """5e-4, not 5e-04 or 0.0005."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _significant(x, digits=2):
    """``x`` rounded to ``digits`` significant digits, without an exponent."""
    return f"{float(f'{x:.{digits}g}'):g}"


def _word(n):
    """Small counts in words, as the prose has them."""
    return _WORDS[n] if 0 <= n < len(_WORDS) else str(n)


def _ordinal(n):
    """95 -> "95th", 1 -> "1st"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _range(values):
    return "-".join(f"{v:g}" for v in values)


def _rows(rows, columns):
    """Table rows, each after a newline (the template ends at the separator);
    one row of n/a when there are none."""
    return "".join("\n" + r for r in rows or ["| " + " | ".join(["n/a"] * columns) + " |"])


def _default(function, parameter):
    """The default of one argument of the training code."""
    return inspect.signature(function).parameters[parameter].default


def _noise(key):
    """"self_retrieval_noise_0.02" or "noise_0.02" -> "2%"."""
    return f"{100 * float(key.rsplit('_', 1)[1]):g}%"


# --------------------------------------------------------------------------
# Parts every card has
# --------------------------------------------------------------------------

def _trunk(path):
    """Strided convolutions of the shipped graph: count, channel range, slope.

    Read from the ONNX file itself, so the card describes what ships even if
    the training code's defaults have moved since.
    """
    import onnx  # the "train" extra, like everything that writes cards

    graph = onnx.load(str(path)).graph
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    strided = [node for node in graph.node if node.op_type == "Conv" and any(
        a.name == "strides" and max(a.ints) > 1 for a in node.attribute)]
    channels = [shapes[node.input[1]][0] for node in strided]
    slopes = {round(a.f, 6) for node in graph.node if node.op_type == "LeakyRelu"
              for a in node.attribute if a.name == "alpha"}
    return {"n_convolutions": _word(len(strided)),
            "trunk_channels": _range([min(channels), max(channels)]) if channels else "n/a",
            "leaky_slope": "/".join(f"{s:g}" for s in sorted(slopes)) or "n/a"}


def _config(checkpoint):
    """The checkpoint's training config, None without a checkpoint."""
    if not checkpoint:
        return None
    return checkpoint.get("config", {}).get("config", {})


def _setting(cfg, name):
    """A training setting: the checkpoint's, else the training code's default."""
    return (cfg or {}).get(name, asdict(TrainConfig())[name])


def _counts(analysis, records):
    """Catalogue counts: computed by ``report.analyse``, else the record."""
    return analysis.get("catalogue_counts") or records["catalogue_counts"]


def _common(card, path, meta, checkpoint, analysis, bench, equality):
    """Header, splits, equality and speed: the context all cards share."""
    grid = meta["grid"]
    records = card.records
    seconds = checkpoint["extra"].get("seconds") if checkpoint else None
    counts = _counts(analysis, records)
    splits = checkpoint["config"]["splits"] if checkpoint else {}
    context = {
        "file_name": Path(path).name, "file_mb": f"{Path(path).stat().st_size / 1e6:.2f}",
        "opset": meta["opset"], "version": meta["version"],
        "source_commit": meta["source_commit"], "npix": str(grid.npix),
        "wave_range": f"{grid.wavelength[0]:.0f}-{grid.wavelength[-1]:.0f}",
        "velocity_step": f"{grid.velocity_step:.1f}",
        "resolving_power": f"{grid.resolving_power:.0f}",
        "training_data": meta["training_data"],
        "threads": str(records["training_threads"]), "training_seconds": _fmt(seconds, 0),
        "stars_with_two_spectra": str(counts["stars_with_two_spectra"]),
        "manga_spaxels": str(counts["manga_spaxels"]),
        "test_percent": str(int(catalogue.TEST_FRACTION * 100)),
        "val_percent": str(int(catalogue.VAL_FRACTION * 100)),
        "leaky_libraries": "`, `".join(synthetic.LEAKY_LIBRARIES),
        "splits_rows": _rows([f"| {k} | {v} |" for k, v in splits.items()], 2),
    }
    context["equality_line"] = _equality_line(card, meta["model"], equality)
    context["bench_line"] = _bench_line(card, meta["model"], bench)
    return context


def _equality_line(card, name, equality):
    if not equality or name not in equality.get("models", {}):
        return ""
    e = equality["models"][name]
    diffs = {k: v for k, v in e["max_abs_difference"].items() if k != "max_relative"}
    tolerance = equality.get("tolerance")
    return "\n" + card.fragment("equality", {
        "n_spectra": str(e["n_spectra"]), "worst_difference": f"{max(diffs.values()):.1e}",
        "worst_relative": f"{e['max_abs_difference']['max_relative']:.1e}",
        "tolerance": "n/a" if tolerance is None else _sci(tolerance)}) + "\n"


def _bench_line(card, name, bench):
    if not bench or name not in bench.get("models", {}):
        return ""
    configurations = bench.get("configurations") or {"as measured": bench}
    parts = [card.fragment("bench_part", {
        "configuration": config.replace("_", " "),
        "onnx_ms": f"{b['onnx_ms_per_spectrum']:.3f}",
        "torch_ms": f"{b['torch_ms_per_spectrum']:.3f}",
        "speedup": f"{b['speedup_torch_over_onnx']:.2f}"})
        for config, b in ((c, r["models"][name]) for c, r in configurations.items())]
    return "\n" + card.fragment("bench", {
        "batch": str(bench["batch"]), "bench_threads": str(bench["threads"]),
        "bench_parts": "; ".join(parts)}) + "\n"


# --------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------

def _shipped_run(runs, test_key, knn):
    """Of recorded training runs, the one that is the shipped VAE: whose
    test kNN figures (``run[test_key]``) are the model's own (training is
    deterministic); None if there is none."""
    keys = ("teff_median_rel_error", "logg_mae", "feh_mae")
    return next((run for run in runs
                 if all(math.isclose(run[test_key][k], knn[k], rel_tol=1e-9) for k in keys)),
                None)


def _shipped_sweep_row(sweep, knn):
    """The supervision sweep's row of the shipped VAE, or None."""
    return _shipped_run((sweep or {}).get("rows", []), "test", knn)


def _shipped_experiment_val(record, knn):
    """Validation kNN of the issue-13 experiment run that is the shipped VAE."""
    run = _shipped_run((record or {}).get("runs", {}).values(), "test_knn", knn)
    return run["val_knn"] if run else None


def _sweep_section(card, sweep, context):
    """The section on how the supervision weight was chosen ("" without a sweep)."""
    if not sweep:
        return ""
    noises = [k for k in sweep["rows"][0]["val"] if k.startswith("self_retrieval_noise_")]

    def retrieval(figures):
        return " / ".join(f"{100 * figures[k]:.1f}%" for k in noises)

    rows = [f"| {r['weight']:g} | {r['val']['logg_mae']:.3f} | "
            f"{100 * r['val']['teff_median_rel_error']:.2f}% | {r['val']['feh_mae']:.3f} | "
            f"{retrieval(r['val'])} | {r['test']['logg_mae']:.3f} | {retrieval(r['test'])} |"
            for r in sweep["rows"]]
    return "\n" + card.fragment("sweep", {
        **context, "sweep_rule": sweep["rule"], "sweep_slack": f"{sweep['slack']:g}",
        "sweep_chosen": f"{sweep['chosen']:g}",
        "sweep_noises": " / ".join(_noise(k) for k in noises),
        "sweep_rows": _rows(rows, 7)}) + "\n"


def _self_retrieval(card, figures, context):
    """The paragraph on search by example ("" when not measured)."""
    if not figures:
        return ""
    first_key, first = next(iter(figures.items()))
    top_key = next(k for k in first if re.fullmatch(r"top\d+", k))
    parts = [card.fragment("retrieval_at_noise", {
        "found_first": _pct(f["first"], ".1f"), "noise": _noise(k),
        "top_rank": top_key[len("top"):], "found_top": _pct(f[top_key], ".1f")})
        for k, f in figures.items()]
    return "\n" + card.fragment("self_retrieval", {
        **context, "copies": str(first["copies"]),
        "n_retrieval_queries": str(first["n_queries"]),
        "copy_step": f"{_default(E.user_copy, 'step'):g}",
        "n_retrieval_index": str(first["n_index"]),
        "retrieval_by_noise": ", ".join(parts), "first_noise": _noise(first_key),
        "miss_dteff": _fmt(first["misses_median_abs_dteff_k"], 0),
        "miss_dlogg": _fmt(first["misses_median_abs_dlogg"], 2)})


def vae_card(path, meta, checkpoint, analysis, bench, equality, records=None):
    """The VAE card's markdown.

    Parameters
    ----------
    path : path of the shipped ONNX file
    meta : dict
        Its metadata (``load_model(path).info``).
    checkpoint : dict or None
        ``train.load_checkpoint`` of the same model; None renders from the
        metadata, the analysis and the sweep, and "n/a" for what only the
        checkpoint holds.
    analysis : dict
        ``report.analyse``'s analysis (``models/plots/latent_analysis.json``).
    bench, equality : dict or None
        ``models/benchmarks/onnx_vs_torch.json`` and ``..._outputs.json``.
    records : dict, optional
        :func:`load_records`; default the checkout's record.
    """
    card = _Card("vae", records)
    records = card.records
    m = checkpoint["metrics"] if checkpoint else meta["metrics"]
    cfg = _config(checkpoint)
    knn = m["knn_k5_l2"]
    base = m.get("baseline_flux_knn", {})
    sweep = analysis.get("vae_supervise_sweep")
    shipped_row = _shipped_sweep_row(sweep, knn)
    if cfg is not None:
        supervise = cfg.get("vae_supervise", 0.0)
    elif shipped_row is not None:
        supervise = shipped_row["weight"]
    else:
        supervise = _setting(None, "vae_supervise")
    validation = (m.get("knn_k5_l2_validation") or (shipped_row or {}).get("val")
                  or _shipped_experiment_val(analysis.get("vae_experiments"), knn) or {})
    cosine = m["knn_k5_cosine"]
    t_ok = knn["teff_median_rel_error"] <= TARGETS["teff"]
    g_ok = knn["logg_mae"] <= TARGETS["logg"]
    f_ok = knn["feh_mae"] <= TARGETS["feh"]
    mi = analysis["mi_ksg_bits"]
    names = analysis["parameters"]
    best = {p: max(range(len(mi)), key=lambda d: mi[d][j]) for j, p in enumerate(names)}
    info = analysis["information_bits"]
    n_supervised = len(catalogue.PARAM_SHIFT)
    supervised = [f"z{d}" for d in range(n_supervised)]
    high = next((k for k in m if re.fullmatch(r"test_stars_anomaly_p\d+", k)),
                "test_stars_anomaly_p95")  # the metric names its percentile
    sedaghat = records["sedaghat_latents"]

    c = _common(card, path, meta, checkpoint, analysis, bench, equality)
    c.update(_trunk(path))
    c.update({
        "latent_dim": str(analysis["latent_dim"]), "metric": meta["metric"],
        "noise_floor": f"{_default(nets.SpectrumVAE, 'noise_floor'):g}",
        "supervise": f"{supervise:g}", "supervised_dims": ", ".join(supervised),
        "supervised_dims_prose": f"{', '.join(supervised[:-1])} and {supervised[-1]}",
        "n_supervised": _word(n_supervised),
        "knn_k": str(_default(E.latent_knn, "k")), "n_queries": str(knn["n_queries"]),
        "n_index": str(knn["n_index"]), "n_index_rounded": f"{round(knn['n_index'], -2):.0f}",
        "teff_pct": _pct(knn["teff_median_rel_error"]),
        "base_teff_pct": _pct(base.get("teff_median_rel_error")),
        "target_teff_pct": f"{100 * TARGETS['teff']:g}", "teff_verdict": _pass(t_ok),
        "logg": f"{knn['logg_mae']:.3f}", "base_logg": _fmt(base.get("logg_mae")),
        "target_logg": f"{TARGETS['logg']:g}", "logg_verdict": _pass(g_ok),
        "logg_excess": f"{knn['logg_mae'] - TARGETS['logg']:.3f}",
        "feh": f"{knn['feh_mae']:.3f}", "base_feh": _fmt(base.get("feh_mae")),
        "target_feh": f"{TARGETS['feh']:g}", "feh_verdict": _pass(f_ok),
        "feh_excess": f"{knn['feh_mae'] - TARGETS['feh']:.3f}",
        "val_teff_pct": _pct(validation.get("teff_median_rel_error")),
        "val_logg": _num(validation.get("logg_mae"), ".3f"),
        "val_feh": _num(validation.get("feh_mae"), ".3f"),
        "cosine_teff_pct": _pct(cosine["teff_median_rel_error"]),
        "cosine_logg": f"{cosine['logg_mae']:.3f}", "cosine_feh": f"{cosine['feh_mae']:.3f}",
        "reconstruction_stars": _num(m.get("test_stars_reconstruction_l1_median"), ".4f"),
        "reconstruction_galaxies": _num(m.get("galaxies_reconstruction_l1_median"), ".4f"),
        "reconstruction_qsos": _num(m.get("qsos_reconstruction_l1_median"), ".4f"),
        "anomaly_stars": _num(m.get("test_stars_anomaly_median"), ".2f"),
        "anomaly_percentile": _ordinal(int(high[len("test_stars_anomaly_p"):])),
        "anomaly_stars_high": _num(m.get(high), ".1f"),
        "anomaly_galaxies": _num(m.get("galaxies_anomaly_median"), ".1f"),
        "anomaly_qsos": _num(m.get("qsos_anomaly_median"), ".1f"),
        "gravity_offset": _range(records["vae_gravity_neighbour_offset_dex"]),
        "catalogue_logg_error": f"{records['catalogue_logg_error_dex']:g}",
        "n_stars": str(analysis["n_stars"]), "n_labelled": str(analysis["n_labelled"]),
        "n_mad_informative": str(len(analysis["mad_informative"])),
        "n_information_informative": str(len(analysis["information_informative"])),
        "mad_threshold": f"{A.MAD_THRESHOLD:g}",
        "information_threshold": f"{A.INFORMATION_THRESHOLD:g}",
        "most_informative": ", ".join(
            f"z{d} {info[d]:.2f}" for d in sorted(range(len(info)),
                                                 key=lambda d: -info[d])[:LISTED_DIMENSIONS]),
        "sedaghat_used": str(sedaghat["informative"]),
        "sedaghat_latent_dim": str(sedaghat["latent_dim"]),
        "ksg_k": str(_default(A.mi_ksg, "k")),
        "histogram_bins": str(_default(A.mi_histogram, "bins")),
        "best_teff": f"z{best['Teff']}", "mi_teff": f"{mi[best['Teff']][0]:.2f}",
        "best_logg": f"z{best['log g']}", "mi_logg": f"{mi[best['log g']][1]:.2f}",
        "best_feh": f"z{best['[Fe/H]']}", "mi_feh": f"{max(row[2] for row in mi):.2f}",
        "best_rv": f"z{best['RV']}", "mi_rv": f"{mi[best['RV']][3]:.2f}",
        "unsupervised_feh_mi": f"{records['unsupervised_vae_feh_mi_bits']:.2f}",
        "pipeline_minutes": str(records["pipeline_minutes"]),
        "reproduction_dex": f"{records['reproduction_vae_dex']:g}",
    })
    c["labels_text"] = card.fragment("labels_supervised" if supervise else "labels_none", c)
    c["mi_text"] = card.fragment("mi_supervised" if supervise else "mi_unsupervised", c)
    misses = [card.fragment(name, c) for name, ok in
              (("miss_logg", g_ok), ("miss_feh", f_ok), ("miss_teff", t_ok)) if not ok]
    c["misses"] = "\n".join(misses or [card.fragment("all_met", c)])
    c["self_retrieval"] = _self_retrieval(card, m.get("self_retrieval"), c)
    c["cross_library_section"] = S.cross_library(card, m)
    c["flux_section"] = S.against_flux(card, m, analysis.get("vae_learning_curve"),
                                       {"knn_k": c["knn_k"], "npix": c["npix"]})
    c["cutouts_section"] = S.cutouts(card, m)
    c["experiments_section"] = S.experiments(
        card, analysis.get("vae_experiments"), m,
        SimpleNamespace(vae_cutout_share=_setting(cfg, "vae_cutout_share")))
    c["sweep_section"] = _sweep_section(card, sweep, c)
    return card.render(c)


# --------------------------------------------------------------------------
# Classifier
# --------------------------------------------------------------------------

def _soft_target_example():
    """How :func:`catalogue.ordinal_target` teaches a SOFT_TARGET_EXAMPLE star:
    "0.65 G / 0.35 K"."""
    label = SOFT_TARGET_EXAMPLE[0]
    star = SimpleNamespace(label=label, spectrum=SimpleNamespace(
        meta={"mk_type": SOFT_TARGET_EXAMPLE}))
    target = catalogue.ordinal_target(star)
    shares = sorted(((v, catalogue.CLASSES[k]) for k, v in enumerate(target) if v > 0),
                    key=lambda share: -share[0])
    return " / ".join(f"{v:.2f} {name}" for v, name in shares)


def _in_label_order(per_class, labels):
    """(class, value) in the model's output order (the metadata's JSON has
    its keys sorted)."""
    return sorted(per_class.items(),
                  key=lambda kv: labels.index(kv[0]) if kv[0] in labels else len(labels))


def _classifier_metrics(meta, checkpoint, analysis):
    """The checkpoint's metrics; without one, the metadata's over the
    analysis's held-out metrics of the same shipped ONNX file."""
    if checkpoint:
        return checkpoint["metrics"]
    return {**analysis.get("classifier_onnx", {}), **meta["metrics"]}


def classifier_card(path, meta, checkpoint, analysis, bench, equality, records=None):
    """The classifier card's markdown (parameters as :func:`vae_card`)."""
    card = _Card("classifier", records)
    records = card.records
    m = _classifier_metrics(meta, checkpoint, analysis)
    cfg = _config(checkpoint)
    acc = m["test_star_accuracy"]
    ok = acc >= TARGETS["accuracy"]
    real = m.get("real_galaxies_and_qsos", [])
    min_coverage = _default(nets.SpectrumClassifier, "min_coverage")
    counts = _counts(analysis, records)
    experiments = records["classifier_experiments"]

    def experiment(name):
        e = experiments[name]
        return card.fragment("experiment", {
            "validation_accuracy": f"{e['validation_accuracy']:.3f}",
            "baseline_accuracy": f"{e['baseline_validation_accuracy']:.3f}"})

    rule_example = records["label_rule_example"]
    first, second = records["teff_backed_examples"]
    c = _common(card, path, meta, checkpoint, analysis, bench, equality)
    c.update(_trunk(path))
    c.update({
        "n_labels": str(len(meta["labels"])), "heads": str(_setting(cfg, "heads")),
        "temperature": f"{m['temperature']:.2f}",
        "min_coverage_pct": f"{100 * min_coverage:g}",
        "labels_json": json.dumps(meta["labels"]),
        "emission_ew": f"{catalogue.EMISSION_EW:.0f}",
        "n_test_stars": str(m["n_test_stars"]),
        "n_stellar_classes": str(sum(label not in EXTRAGALACTIC for label in meta["labels"])),
        "accuracy": f"{acc:.3f}", "target_accuracy": f"{TARGETS['accuracy']:.2f}",
        "accuracy_verdict": _pass(ok),
        "accuracy_shortfall": f"{TARGETS['accuracy'] - acc:.3f}",
        "main_accuracy": f"{m['test_star_main_class_accuracy']:.3f}",
        "within_one": f"{m['test_star_main_class_within_one']:.3f}",
        "within_one_pct": _pct(m["test_star_main_class_within_one"], ".1f"),
        "n_consistent": _fmt(m.get("n_test_stars_label_consistent")),
        "consistent_accuracy": _fmt(m.get("test_star_accuracy_label_consistent")),
        "real_correct": str(m["real_extragalactic_correct"]),
        "real_total": str(m["real_extragalactic_total"]),
        "real_verdict": _pass(m["real_extragalactic_correct"] == m["real_extragalactic_total"]),
        "real_correct_covered": str(m["real_extragalactic_correct_with_coverage"]),
        "real_covered": str(m["real_extragalactic_with_coverage"]),
        "rule_example_type": rule_example["mk_type"],
        "rule_example_teff": str(rule_example["teff_k"]),
        "validation_accuracy": _fmt(m.get("validation_star_accuracy")),
        "n_validation_stars": _fmt(m.get("n_validation_stars")),
        "recall": ", ".join(f"{k} {v:.2f}" for k, v in _in_label_order(
            m["per_class_recall"], meta["labels"])),
        "calibration_bins": str(records["calibration_bins"]),
        "calibration_error": f"{m['expected_calibration_error']:.3f}",
        "uncertainty_right": _num(m.get("uncertainty_correct_median"), ".2f"),
        "uncertainty_wrong": _fmt(m.get("uncertainty_wrong_median"), 2),
        "real_rows": _rows([f"| {r['obs_id']} | {r['truth']} | {r['predicted']} | "
                            f"{r['probability']:.2f} | {r['uncertainty']:.2f} | "
                            f"{r['grid_coverage']:.2f} |" for r in real], 6),
        "o_star_spectra": _word(counts["o_star_spectra"]),
        "o_star_test_spectra": _word(counts["o_star_spectra_test"]),
        "reproduction_points": str(records["reproduction_classifier_points"]),
        "one_spectrum_points": f"{100 / max(m['n_test_stars'], 1):.1f}",
        "errors": str(m.get("errors", "?")),
        "errors_at_boundary": str(m.get("errors_at_subclass_boundary", "?")),
        "errors_backed": str(m.get("errors_backed_by_catalogue_teff", "?")),
        "flux_baseline_k": str(_default(E.knn_class_baseline, "k")),
        "flux_baseline_accuracy": _fmt(m.get("baseline_knn_flux_accuracy")),
        "wider_trunk": _range(records["classifier_wider_trunk_channels"]),
        "soft_example": SOFT_TARGET_EXAMPLE, "soft_example_target": _soft_target_example(),
        "experiment_soft": experiment("soft_targets"),
        "experiment_aux": experiment("parameter_head"),
        "experiment_rule": experiment("label_rule"),
        "experiment_snr_floor": f"{experiments['snr_floor']['min_snr']:g}",
        "experiment_snr": experiment("snr_floor"),
        "min_snr": f"{_setting(cfg, 'clf_min_snr'):g}",
        "backed_first_type": first["mk_type"], "backed_first_teff": str(first["teff_k"]),
        "backed_first_called": first["called"],
        "backed_second_type": second["mk_type"], "backed_second_teff": str(second["teff_k"]),
        "backed_second_called": second["called"],
    })
    c["rule_text"] = card.fragment(
        "rule_used" if (cfg or {}).get("clf_label_rule") else "rule_unused", c)
    c["parameter_ceiling"] = _parameter_ceiling(card, m, c)
    why = [card.fragment("miss_accuracy", c)] if not ok else []
    for r in real:
        if r["truth"] == r["predicted"]:
            continue
        row = {**c, "obs_id": r["obs_id"], "truth": r["truth"], "predicted": r["predicted"],
               "coverage_pct": f"{100 * r['grid_coverage']:.0f}",
               "probability": f"{r['probability']:.2f}",
               "uncertainty": f"{r['uncertainty']:.2f}"}
        if r["grid_coverage"] < min_coverage:
            why.append(card.fragment("real_uncovered", row))
        else:
            row["known_hard"] = _known_hard(card, r["obs_id"], c)
            why.append(card.fragment("real_wrong", row))
    c["misses"] = "\n".join(why or [card.fragment("all_met", c)])
    c["calibration_section"] = S.calibration(card, m)
    c["domain_section"] = S.domain(card, m, analysis)
    return card.render(c)


def _parameter_ceiling(card, m, context):
    """The sentence on the catalogue-parameter classifier ("" if not measured)."""
    base = m.get("baseline_catalogue_parameters")
    if not base:
        return ""
    test, val = base["test"], base["val"]
    return "  " + card.fragment("parameter_ceiling", {
        **context, "ceiling_k": str(test["k"]), "ceiling_test": f"{test['accuracy']:.3f}",
        "ceiling_n": str(test["n"]), "ceiling_validation": f"{val['accuracy']:.3f}"})


def _known_hard(card, obs_id, context):
    """Why a particular real spectrum is hard (looked at by eye; the template
    has the reason, the record its figures), "" when nobody looked."""
    name = f"hard_{obs_id}"
    if name not in card.fragments:
        return ""
    figures = card.records["known_hard"].get(obs_id, {})
    return "  " + card.fragment(name, {**context, **{k: f"{v:g}" for k, v in figures.items()}})


# --------------------------------------------------------------------------
# Velocity
# --------------------------------------------------------------------------

def _scan_ranges(grid):
    """What the coarse scan covers, from the shifts it really scans
    (:func:`velocity.kind_ranges`), two significant digits."""
    coarse = V.POOL * math.log(10) * grid.loglam_step
    ranges = V.kind_ranges(grid, V.POOL)

    def z(shift):
        return math.expm1(shift * coarse)

    return {"star_range_kms": _significant(ranges["star"][1] * coarse * C_KMS),
            "galaxy_z_low": _significant(z(ranges["galaxy"][0])),
            "galaxy_z_high": _significant(z(ranges["galaxy"][1])),
            "qso_z_low": _significant(z(ranges["qso"][0])),
            "qso_z_high": _significant(z(ranges["qso"][1]))}


def _kms(block, key, spec=".2f"):
    return _num((block or {}).get(key), spec)


def velocity_card(path, meta, checkpoint, analysis, bench, equality, records=None):
    """The velocity card's markdown (parameters as :func:`vae_card`)."""
    card = _Card("velocity", records)
    records = card.records
    m = checkpoint["metrics"] if checkpoint else meta["metrics"]
    fgk = m["fgk_snr50"]
    manga = m["manga"]
    rv_ok = fgk["robust_sigma_kms"] <= TARGETS["rv_kms"]
    manga_ok = manga["within_5e-4"] == manga["n"]
    templates = m.get("templates", {})
    stelib = m.get("stelib_minus_miles", {})
    low_snr = m.get("fgk_snr10")
    outliers = next(k for k in fgk if re.fullmatch(r"outliers_over_\d+_kms", k))
    rotation = manga.get("rotation_equivalent_kms_median")
    if rotation is None:  # as evaluate.velocity_metrics defines it
        rotation = manga["abs_dz_median"] * C_KMS
    spaxels = manga.get("spaxels", [])

    c = _common(card, path, meta, checkpoint, analysis, bench, equality)
    c.update(_scan_ranges(meta["grid"]))
    c.update({
        "pool": str(V.POOL), "phases": str(V.PHASES),
        "phase_fraction": _FRACTIONS.get(V.PHASES, f"1/{V.PHASES}"),
        "newton_steps": _word(_default(nets.VelocityScanner, "newton_steps")),
        "systematic_floor": f"{m['systematic_floor_kms']:.2f}",
        "min_coverage_pct": f"{100 * records['velocity_min_coverage']:g}",
        **{f"{kind}_templates": _fmt(templates.get(kind, {}).get("templates"))
           for kind in ("star", "galaxy", "qso")},
        "fgk_stars": str(fgk["n_stars"]),
        "fgk_per_star": str(fgk["n_measurements"] // max(fgk["n_stars"], 1)),
        "injected_max_kms": f"{_default(E.injected_velocities, 'vmax'):g}",
        "fgk_snr": f"{fgk['snr_per_native_pixel']:g}",
        "mad_to_sigma": f"{1 / statistics.NormalDist().inv_cdf(0.75):.4f}",
        "fgk_robust_sigma": f"{fgk['robust_sigma_kms']:.2f}",
        "target_rv": f"{TARGETS['rv_kms']:g}", "rv_verdict": _pass(rv_ok),
        "fgk_std": f"{fgk['std_kms']:.2f}", "fgk_bias": f"{fgk['bias_kms']:+.2f}",
        "fgk_within_star": f"{fgk['within_star_std_kms']:.2f}",
        "fgk_star_offsets": f"{fgk['star_offset_std_kms']:.2f}",
        "fgk_median_error": f"{fgk['median_error_kms']:.2f}",
        "fgk_pulls": f"{fgk['pull_robust_sigma']:.2f}",
        "fgk_outliers": str(fgk[outliers]), "fgk_measurements": str(fgk["n_measurements"]),
        "outlier_threshold": re.search(r"\d+", outliers).group(),
        "outlier_offsets": _range(records["velocity_outlier_offsets_kms"]),
        "target_dz": _sci(TARGETS["manga_dz"]),
        "manga_within": str(manga["within_5e-4"]), "manga_n": str(manga["n"]),
        "manga_verdict": _pass(manga_ok),
        "oba_snr": _kms(m.get("oba_snr50"), "snr_per_native_pixel", "g"),
        "oba_robust_sigma": _kms(m.get("oba_snr50"), "robust_sigma_kms", ".1f"),
        "oba_std": _kms(m.get("oba_snr50"), "std_kms", ".1f"),
        "m_robust_sigma": _kms(m.get("m_snr50"), "robust_sigma_kms", ".1f"),
        "m_std": _kms(m.get("m_snr50"), "std_kms", ".1f"),
        "fgk_low_snr": _kms(low_snr, "snr_per_native_pixel", "g"),
        "fgk_low_snr_robust_sigma": _kms(low_snr, "robust_sigma_kms", ".1f"),
        "stelib_median": _fmt(stelib.get("median_kms"), 1),
        "stelib_robust_sigma": _fmt(stelib.get("robust_sigma_kms"), 1),
        # no STELIB figure in a checkpoint means no test star is in both libraries
        "stelib_stars": _fmt(stelib.get("n_stars", 0 if checkpoint else None)),
        "rotation_limit_kms": f"{TARGETS['manga_dz'] * C_KMS:.0f}",
        "manga_abs_dz": f"{manga['abs_dz_median']:.1e}",
        "manga_rotation_kms": f"{rotation:.0f}",
        "spaxel_rows": _rows([f"| {s['obs_id']} | {s['z_systemic']:.5f} | {s['z']:.5f} | "
                              f"{s['dz_over_1pz']:+.2e} | {s['snr_per_pixel']} |"
                              for s in spaxels], 5),
        "qso_rows": _rows([f"| {q['obs_id']} | {_fmt(q['z_catalogue'])} | {_fmt(q['z'])} | "
                           f"{q['grid_coverage']:.2f} |" for q in m.get("qso_and_agn", [])], 4),
    })
    why = []
    if fgk["std_kms"] > TARGETS["rv_kms"]:
        why.append(card.fragment("std_above_target", c))
    if not rv_ok:
        why.append(card.fragment("miss_rv", c))
    for s in spaxels:
        if abs(s["dz_over_1pz"]) >= TARGETS["manga_dz"]:
            why.append(card.fragment("miss_spaxel", {
                **c, "obs_id": s["obs_id"], "dz_over_one_plus_z": f"{s['dz_over_1pz']:+.2e}",
                "snr_per_pixel": str(s["snr_per_pixel"])}))
    c["misses"] = "\n".join(why or [card.fragment("all_met", c)])
    c["galaxy_scan_section"] = S.galaxy_scan(card, m, meta["grid"], c)
    return card.render(c)


# --------------------------------------------------------------------------
# All three
# --------------------------------------------------------------------------

def write_all(cards_dir, files, models, checkpoints, analysis, bench, equality, *,
              records=None):
    """Write the three cards; return their paths.

    ``records`` defaults to ``benchmarks/card_records.json`` beside
    ``cards_dir`` (the models directory being analysed, like the benchmark).
    """
    cards_dir = Path(cards_dir)
    if records is None:
        records = load_records(cards_dir.parent / "benchmarks" / RECORDS.name)
    cards_dir.mkdir(parents=True, exist_ok=True)
    makers = {"vae": vae_card, "classifier": classifier_card, "velocity": velocity_card}
    written = []
    for name, maker in makers.items():
        meta = models[name].info
        text = maker(files[name], meta, checkpoints.get(name), analysis, bench, equality,
                     records)
        path = cards_dir / f"{name}.md"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
