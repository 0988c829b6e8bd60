"""Card sections on search across instruments, the latent against raw flux,
cutouts, calibration and the models' domain (issue 13).

Each function returns markdown rendered from a fragment of the card's
template (:class:`retrspect.models.cards._Card`), or "" when the figures are
not there (a model trained before they were measured): the prose stays in
the templates, the numbers come from the metrics.
"""
from __future__ import annotations

import math

from retrspect.models import evaluate as E
from retrspect.models.train import VAE_CUTOUT_RANGE

#: Issue 13's targets.
CROSS_TARGETS = {"hit@1": 0.5, "hit@10": 0.9}
FLUX_GAIN_TARGET = 0.20
ECE_TARGET = 0.05
CLEANED_ACCURACY_TARGET = 0.90
MAX_REMOVED = 0.05
DIRECTIONS = ("MILES->STELIB", "STELIB->MILES")


def _verdict(ok):
    return "met" if ok else "**missed**"


def _hit(block, k):
    return f"{block[k]:.2f} ± {block[k + '_se']:.2f}"


def cross_library(card, m):
    """Same-star retrieval between MILES and STELIB, test and validation."""
    test, val = m.get("cross_library"), m.get("cross_library_validation")
    if not test:
        return ""
    rows = []
    for direction in DIRECTIONS:
        block, whole = test[direction], test[f"{direction} whole archive"]
        ok = all(block[k] >= t for k, t in CROSS_TARGETS.items())
        rows.append(f"| {direction.replace('->', ' → ')} | {block['n']} | {_hit(block, 'hit@1')} | "
                    f"{_hit(block, 'hit@10')} | {_hit(whole, 'hit@1')} | {_hit(whole, 'hit@10')} | "
                    f"{_verdict(ok)} |")
    validation = ", ".join(
        f"{d.replace('->', ' → ')} {val[d]['hit@1']:.2f} / {val[d]['hit@10']:.2f}"
        for d in DIRECTIONS) if val else "n/a"
    return "\n" + card.fragment("cross_library", {
        "cross_rows": "\n" + "\n".join(rows),
        "target_hit1": f"{CROSS_TARGETS['hit@1']:g}", "target_hit10": f"{CROSS_TARGETS['hit@10']:g}",
        "cross_validation": validation,
        "n_val_pairs": str(val[DIRECTIONS[0]]["n"]) if val else "n/a"}) + "\n"


def against_flux(card, m, curve=None, context=None):
    """The latent's kNN errors against the raw prepared flux's, per parameter."""
    knn, base = m.get("knn_k5_l2"), m.get("baseline_flux_knn")
    if not knn or not base:
        return ""
    rows = []
    for key, name, unit, scale in (("teff_median_rel_error", "median abs(dTeff)/Teff", "%", 100),
                                   ("logg_mae", "log g MAE", " dex", 1),
                                   ("feh_mae", "[Fe/H] MAE", " dex", 1)):
        gain = 1 - knn[key] / base[key]
        digits = 2 if unit == "%" else 3
        rows.append(f"| {name} | {scale * knn[key]:.{digits}f}{unit} | "
                    f"{scale * base[key]:.{digits}f}{unit} | {100 * gain:+.0f}% | "
                    f"{_verdict(gain >= FLUX_GAIN_TARGET)} |")
    context = {**(context or {}), "flux_rows": "\n" + "\n".join(rows),
               "flux_gain_target": f"{100 * FLUX_GAIN_TARGET:.0f}", "curve_text": ""}
    if curve:
        agree = curve["catalogue_agreement"]
        points = "; ".join(
            f"{r['n_index']} stars: Teff {100 * r['latent']['teff_median_rel_error']:.2f}% "
            f"(flux {100 * r['flux']['teff_median_rel_error']:.2f}%), log g "
            f"{r['latent']['logg_mae']:.3f} ({r['flux']['logg_mae']:.3f}), [Fe/H] "
            f"{r['latent']['feh_mae']:.3f} ({r['flux']['feh_mae']:.3f})" for r in curve["rows"])
        context["curve_text"] = card.fragment("learning_curve", {
            "curve_points": points, "n_both": str(agree["n_stars"]),
            "agree_teff": f"{100 * agree['teff_rel_difference_sigma']:.1f}",
            "agree_logg": f"{agree['logg_dex_difference_sigma']:.3f}",
            "agree_feh": f"{agree['feh_dex_difference_sigma']:.3f}"})
    return "\n" + card.fragment("against_flux", context) + "\n"


def cutouts(card, m):
    """Search by example with SODA-like cutouts of test stars."""
    block = m.get("cutouts")
    if not block:
        return ""
    first_k = _first_k(block)
    rows = [f"| {100 * float(k.split('_')[1]):.0f}% | {v['n']} | {_hit(v, 'hit@1')} | "
            f"{_hit(v, f'hit@{first_k}')} |" for k, v in block.items()]
    return "\n" + card.fragment("cutouts", {"cutout_rows": "\n" + "\n".join(rows),
                                            "first_k": str(first_k)}) + "\n"


def _first_k(block):
    """The k > 1 of a cutout block's hit@k (the SODA criterion: 3)."""
    first = next(iter(block.values()))
    return max(int(key[len("hit@"):]) for key in first
               if key.startswith("hit@") and not key.endswith("_se"))


def calibration(card, m):
    """ECE with its bootstrap interval and the label-rule figures."""
    interval = m.get("expected_calibration_error_95")
    if not interval:
        return ""
    ece = m["expected_calibration_error"]
    removed = m.get("label_rule_removed_per_class", {})
    fraction = m.get("label_rule_removed_fraction", float("nan"))
    cleaned = m.get("test_star_accuracy_label_consistent", float("nan"))
    return "\n" + card.fragment("calibration", {
        "ece": f"{ece:.3f}", "ece_low": f"{interval[0]:.3f}", "ece_high": f"{interval[1]:.3f}",
        "ece_target": f"{ECE_TARGET:g}", "ece_level": f"{E.ECE_LEVEL:g}", "ece_verdict": _verdict(ece <= ECE_TARGET),
        "removed": ", ".join(f"{k} {v}" for k, v in removed.items()) or "none",
        "n_removed": str(sum(removed.values())),
        "removed_pct": f"{100 * fraction:.1f}", "max_removed_pct": f"{100 * MAX_REMOVED:g}",
        "cleaned_accuracy": f"{cleaned:.3f}", "n_cleaned": str(m.get("n_test_stars_label_consistent")),
        "cleaned_target": f"{CLEANED_ACCURACY_TARGET:g}",
        "cleaned_verdict": _verdict(cleaned >= CLEANED_ACCURACY_TARGET
                                    and fraction <= MAX_REMOVED)}) + "\n"


def domain(card, m, analysis):
    """The unknown-class rule: its parameters and what it does to held-out
    real spectra and to synthetic out-of-domain ones."""
    rule, figures = m.get("class_coverage"), analysis.get("domain")
    if not rule or not figures:
        return ""
    coverage_rows = [f"| {100 * r['coverage']:.0f}% | {r['accuracy']:.3f} |" for r in rule["rows"]]
    real_rows = []
    for kind in ("star", "galaxy", "qso"):
        b = figures[f"test_{kind}"]
        accuracy = ("n/a" if b["accuracy_known"] is None else
                    f"{b['accuracy_known']:.3f} (all: {b['accuracy_all']:.3f})")
        real_rows.append(f"| held-out real {kind} | {b['n']} | {b['n'] - b['class_known']} "
                         f"({b['unknown_low_coverage']} coverage, {b['unknown_anomaly']} anomaly) | "
                         f"{accuracy} |")
    synthetic_rows = [f"| synthetic {k[len('synthetic_'):].replace('_', ' ')} | {b['n']} | "
                      f"{b['unknown']} | median anomaly {b['anomaly_median']:.3g} |"
                      for k, b in figures.items() if k.startswith("synthetic_")]
    ceiling = figures["anomaly_ceiling"]
    return "\n" + card.fragment("domain", {
        "coverage_rule": rule["rule"], "coverage_slack": f"{rule['slack']:g}",
        "min_coverage": f"{100 * rule['chosen']:.0f}",
        "coverage_rows": "\n" + "\n".join(coverage_rows),
        "anomaly_ceiling": "n/a" if ceiling is None or math.isnan(ceiling) else f"{ceiling:.3g}",
        "test_anomaly_max": f"{figures['test_star_anomaly_max']:.3g}",
        "anomaly_percentile": f"{E.ANOMALY_PERCENTILE:g}th",
        "domain_rows": "\n" + "\n".join(real_rows + synthetic_rows)}) + "\n"


def galaxy_scan(card, m, grid, context):
    """Synthetic galaxies across the scanned redshift range."""
    from retrspect.models import synthetic
    scan = m.get("synthetic_galaxies")
    if not scan:
        return ""
    # where the population models' blue end leaves half the grid uncovered
    blue = min(t.wave[t.good][0] for t in synthetic.ssp_library()
               if not t.name.startswith("bpass"))
    lo, hi = grid.wavelength[0], grid.wavelength[-1]
    z_half = hi / (blue * math.sqrt(hi / lo)) - 1
    rows = [f"| {b['z_lo']:.1f}-{b['z_hi']:.1f} | {b['n']} | {b['right']} | "
            f"{b['right_with_lines']}/{b['with_lines']} | {b['covered']} | "
            f"{b['right_of_covered']} |" for b in scan["bins"]]
    return "\n" + card.fragment("galaxy_scan", {
        **context, "ssp_blue": f"{round(blue, -2):.0f}", "z_half_coverage": f"{z_half:.1f}",
        "scan_rows": "\n" + "\n".join(rows), "scan_snr": f"{scan['snr']:g}",
        "scan_tolerance": f"{scan['tolerance_dz_over_1pz']:g}"}) + "\n"


def experiments(card, record, m, config):
    """How the configuration was chosen: the rule and the validation figures
    of every run of ``models/benchmarks/issue13_experiments.json``."""
    if not record or not record.get("chosen"):
        return ""
    rows = []
    for name, run in sorted(record["runs"].items()):
        own = run.get("self_retrieval_val")
        retrieval = (f"{own['noise_0.02']['first']:.3f}" if own else
                     f"({run['self_retrieval_val_test']['noise_0.02']['first']:.3f})")
        cross = run["cross_library_val"]
        cut = run["cutouts_val"]["coverage_0.8"]
        mark = " **(shipped)**" if name == record["chosen"] else ""
        rows.append(f"| {name}{mark} | {retrieval} | {cut['hit@1']:.2f} / {cut['hit@3']:.2f} | "
                    + " | ".join(f"{cross[d]['hit@1']:.2f} / {cross[d]['hit@10']:.2f}"
                                 for d in DIRECTIONS)
                    + f" | {run['val_knn']['logg_mae']:.3f} |")
    floors = record["floors"]
    retrieval = m.get("self_retrieval") or {}
    noise, figures = next(iter(retrieval.items()), ("noise_n/a", {}))
    top = next((k for k in figures if k.startswith("top")), "topn/a")
    cut_key = next(iter(record["runs"][record["chosen"]]["cutouts_val"]), "coverage_n/a")
    low, high = VAE_CUTOUT_RANGE
    number = lambda x, spec: "n/a" if x is None else format(x, spec)  # noqa: E731
    return "\n" + card.fragment("experiments", {
        "cutout_share": f"{100 * config.vae_cutout_share:.0f}",
        "cutout_range": f"{100 * low:.0f}-{100 * high:.0f}",
        "miss_dteff": number(figures.get("misses_median_abs_dteff_k"), ".0f"),
        "miss_dlogg": number(figures.get("misses_median_abs_dlogg"), ".2f"),
        "top_rank": top[len("top"):], "top_share": number(100 * figures[top], ".1f")
        if top in figures else "n/a",
        "first_noise": f"{100 * float(noise.split('_')[1]):g}%" if "n/a" not in noise else "n/a",
        "cut_fraction": f"{100 * float(cut_key.split('_')[1]):.0f}%",
        "first_k": str(_first_k(record["runs"][record["chosen"]]["cutouts_val"])),
        "experiment_rule": record["rule"], "self_floor": f"{floors['self_floor']:g}",
        "cutout_floor": f"{floors['cutout_floor']:g}", "hit10_floor": f"{floors['hit10_floor']:g}",
        "chosen": record["chosen"], "experiment_rows": "\n" + "\n".join(rows)}) + "\n"
