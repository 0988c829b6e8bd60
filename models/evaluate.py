"""Metrics on held-out real spectra (the figures the model cards quote).

All queries here are test-split spectra (stars never seen in training in
any form; every real galaxy and quasar); training stars only ever form the
kNN index.  Augmented copies appear only where a metric needs a known truth
that real data lack (injected radial velocities) and are labelled so.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

from retrspect.ingest.preprocess import C_KMS, MIN_GRID_COVERAGE, MODEL_GRID
from retrspect.models import catalogue, observation



def prepared(items, grid=MODEL_GRID):
    """(flux, weight) of real spectra as ingest would prepare them."""
    flux = np.zeros((len(items), grid.npix), dtype=np.float32)
    weight = np.zeros_like(flux)
    for row, item in enumerate(items):
        flux[row], weight[row] = observation.prepare_observed(item.spectrum, grid)
    return flux, weight


def run(model, flux, weight, batch=256):
    """Outputs of a model on numpy arrays, in batches, as numpy arrays."""
    outs = []
    with torch.inference_mode():
        for start in range(0, len(flux), batch):
            out = model(torch.as_tensor(flux[start:start + batch]),
                        torch.as_tensor(weight[start:start + batch]))
            outs.append([o.numpy() for o in out])
    return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]


# --------------------------------------------------------------------------
# Latent kNN
# --------------------------------------------------------------------------

def knn_predict(index_vectors, index_labels, query_vectors, k=5, metric="l2"):
    """Mean label of the k nearest index vectors of each query.

    Parameters
    ----------
    index_vectors : ndarray (n, d)
    index_labels : ndarray (n, m)
    query_vectors : ndarray (q, d)
    k : int
    metric : {"l2", "cosine"}

    Returns
    -------
    ndarray (q, m)
    """
    a = np.asarray(index_vectors, dtype=np.float64)
    b = np.asarray(query_vectors, dtype=np.float64)
    if metric == "cosine":
        a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
        b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    d = (b * b).sum(1)[:, None] - 2 * b @ a.T + (a * a).sum(1)[None, :]
    nearest = np.argsort(d, axis=1)[:, :k]
    return np.asarray(index_labels)[nearest].mean(1)


def parameter_errors(predicted, truth):
    """The three target figures: median |dTeff|/Teff, log g MAE, [Fe/H] MAE."""
    return {
        "teff_median_rel_error": float(np.median(np.abs(predicted[:, 0] - truth[:, 0]) / truth[:, 0])),
        "logg_mae": float(np.mean(np.abs(predicted[:, 1] - truth[:, 1]))),
        "feh_mae": float(np.mean(np.abs(predicted[:, 2] - truth[:, 2]))),
        "n_queries": int(len(truth)),
    }


def with_parameters(items):
    return [i for i in items if i.teff and i.logg is not None and i.feh is not None]


def latent_knn(vae, items, *, k=5, metric="l2", query_split="test",
               query_collection="MILES", index_split="train"):
    """kNN figures of the VAE's latent means for held-out stars.

    The index holds training stars (MILES and STELIB) with parameters; the
    queries are ``query_split`` stars of ``query_collection``.
    """
    index = with_parameters([i for i in items if i.kind == "star" and i.split == index_split])
    query = with_parameters([i for i in items if i.kind == "star" and i.split == query_split
                             and i.collection == query_collection])
    fi, wi = prepared(index)
    fq, wq = prepared(query)
    zi = run(vae, fi, wi)[0]
    zq = run(vae, fq, wq)[0]
    truth_i = np.array([[i.teff, i.logg, i.feh] for i in index])
    truth_q = np.array([[i.teff, i.logg, i.feh] for i in query])
    out = parameter_errors(knn_predict(zi, truth_i, zq, k, metric), truth_q)
    out["n_index"] = len(index)
    # the same with the MILES part of the index only
    miles = np.array([i.collection == "MILES" for i in index])
    out["miles_index_only"] = parameter_errors(
        knn_predict(zi[miles], truth_i[miles], zq, k, metric), truth_q)
    return out


def flux_knn(items, *, k=5, query_split="test"):
    """Baseline: the same kNN on the prepared flux itself (no model)."""
    index = with_parameters([i for i in items if i.kind == "star" and i.split == "train"])
    query = with_parameters([i for i in items if i.kind == "star" and i.split == query_split
                             and i.collection == "MILES"])
    fi, _ = prepared(index)
    fq, _ = prepared(query)
    truth_i = np.array([[i.teff, i.logg, i.feh] for i in index])
    truth_q = np.array([[i.teff, i.logg, i.feh] for i in query])
    return parameter_errors(knn_predict(fi, truth_i, fq, k), truth_q)


def user_copy(spectrum, rng, *, noise=0.02, step=1.37):
    """What a user might hold of an archive spectrum: its served (vacuum)
    flux resampled onto another linear grid, with ``noise`` relative
    Gaussian noise, no errors and no resolution stated: the upload of
    search by example (``tests/stack/test_byexample.py`` does the same)."""
    from astropy import units as u

    from retrspect.ingest.preprocess import vacuum_wavelength
    from retrspect.ingest.spectrum import Spectrum, empty_meta
    wave = vacuum_wavelength(spectrum).to_value(u.AA)
    good = spectrum.good
    lo, hi = wave[good][0], wave[good][-1]
    new = np.arange(max(lo, 3600.0), min(hi, 7350.0), step)
    flux = np.interp(new, wave[good], spectrum.flux.value[good])
    flux = flux * (1 + noise * rng.standard_normal(new.size))
    return Spectrum(wavelength=new * u.AA, flux=flux * u.dimensionless_unscaled, ivar=None,
                    mask=np.zeros(new.size, bool), medium="vacuum", meta=empty_meta(),
                    source="user copy")


def self_retrieval(vae, items, *, noises=(0.02, 0.05), splits=("val", "test"), copies=3,
                   seed=7):
    """How often a user's copy of an archive star finds that star first.

    Search by example promises that an upload of an archive spectrum
    (resampled, noisier, without the archive's resolution and medium
    knowledge) returns the original as its nearest neighbour.  The index is
    the whole bundled archive as ingest prepares it; the queries are
    ``copies`` independent user copies (:func:`user_copy`) of each held-out
    star.  A latent pulled too hard towards stellar parameters (weak
    supervision) fails this first: twins in Teff, log g and [Fe/H] crowd
    out the spectrum itself.

    Returns
    -------
    dict
        Per noise level: fraction found first, fraction in the top 5,
        median rank, numbers of stars and index spectra, and what the
        misses found instead.
    """
    rng = np.random.default_rng(seed)
    flux, weight = prepared(items)
    keep = weight.any(1)
    index_items = [i for i, k in zip(items, keep) if k]
    zi = run(vae, flux[keep], weight[keep])[0].astype(np.float64)
    where = {i.obs_id: n for n, i in enumerate(index_items)}
    stars = [i for i in index_items if i.kind == "star" and i.split in splits]
    queries = stars * copies
    own_row = np.array([where[i.obs_id] for i in queries])
    out = {}
    for noise in noises:
        pairs = [observation.prepare_observed(user_copy(i.spectrum, rng, noise=noise)) for i in queries]
        zq = run(vae, np.stack([f for f, _ in pairs]), np.stack([w for _, w in pairs]))[0]
        d = ((zq.astype(np.float64)[:, None, :] - zi[None, :, :]) ** 2).sum(-1)
        own = d[np.arange(len(queries)), own_row]
        # ties count against the original: a latent that maps everything to
        # one point must not score as finding each spectrum first
        rank = (d <= own[:, None]).sum(1)
        found = [index_items[n] for n in d.argmin(1)]
        misses = [(q, f) for q, f, r in zip(queries, found, rank) if r > 1]
        twins = [(q, f) for q, f in misses if q.teff and f.teff and q.logg is not None
                 and f.logg is not None]
        out[f"noise_{noise:g}"] = {
            "first": float(np.mean(rank == 1)), "top5": float(np.mean(rank <= 5)),
            "median_rank": float(np.median(rank)), "n_queries": len(stars),
            "copies": copies, "n_index": len(index_items),
            "misses_same_star": sum(q.star_id == f.star_id for q, f in misses),
            # what a miss finds instead: how far it is from the query in the catalogue
            "misses_median_abs_dteff_k": float(np.median(
                [abs(q.teff - f.teff) for q, f in twins])) if twins else None,
            "misses_median_abs_dlogg": float(np.median(
                [abs(q.logg - f.logg) for q, f in twins])) if twins else None}
    return out


def _hit_rates(ranks, ks):
    """hit@k with its binomial standard error, for each k."""
    ranks = np.asarray(ranks)
    out = {"n": int(ranks.size)}
    for k in ks:
        p = float(np.mean(ranks <= k)) if ranks.size else float("nan")
        out[f"hit@{k}"] = p
        out[f"hit@{k}_se"] = (math.sqrt(p * (1 - p) / ranks.size)
                              if ranks.size else float("nan"))
    return out


def _embedded(vae, items):
    """The items the archive embeds (covering enough of the grid, as
    ingest decides) and their latent means."""
    from retrspect.ingest.preprocess import MIN_GRID_COVERAGE, grid_coverage
    flux, weight = prepared(items)
    keep = grid_coverage(weight) >= MIN_GRID_COVERAGE
    z = run(vae, flux[keep], weight[keep])[0].astype(np.float64)
    return [i for i, k in zip(items, keep) if k], z


def cross_library_retrieval(vae, items, *, split="test",
                            libraries=("MILES", "STELIB"), ks=(1, 10)):
    """Similarity across instruments: the same star in another library.

    For each star of ``split`` with spectra in both libraries, each of its
    spectra in one library queries; the hit is any of the star's spectra in
    the other library.  Ranks are counted (ties against the query) among
    the other library's embedded spectra, and, in the whole-archive variant,
    among every embedded archive spectrum but the query itself.

    Returns
    -------
    dict
        ``"A->B"`` and ``"A->B whole archive"`` for both directions: n
        queries, hit@k and its binomial standard error for each k.
    """
    index_items, z = _embedded(vae, items)
    by_star = {}
    for n, item in enumerate(index_items):
        if item.kind == "star" and item.split == split:
            by_star.setdefault(item.star_id, {}).setdefault(
                item.collection, []).append(n)
    out = {}
    for source, target in (libraries, libraries[::-1]):
        pool = np.array([n for n, i in enumerate(index_items)
                         if i.collection == target])
        ranks, archive_ranks = [], []
        for spectra in by_star.values():
            if source not in spectra or target not in spectra:
                continue
            for query in spectra[source]:
                d = ((z - z[query]) ** 2).sum(1)
                best = min(d[n] for n in spectra[target])
                ranks.append(int((d[pool] <= best).sum()))
                others = np.delete(d, query)
                archive_ranks.append(int((others <= best).sum()))
        out[f"{source}->{target}"] = _hit_rates(ranks, ks)
        out[f"{source}->{target} whole archive"] = _hit_rates(archive_ranks, ks)
    return out


def cut_to_coverage(spectrum, fraction, *, blue_side=True):
    """The spectrum cut, from one end of the model grid, to a window that
    covers ``fraction`` of the grid (in log-lambda): a SODA cutout."""
    from astropy import units as u

    from retrspect.ingest.preprocess import vacuum_wavelength
    from retrspect.ingest.spectrum import Spectrum
    lo, hi = MODEL_GRID.wavelength[0], MODEL_GRID.wavelength[-1]
    span = math.log(hi / lo) * fraction
    window = (lo, lo * math.exp(span)) if blue_side else (hi / math.exp(span), hi)
    wave = vacuum_wavelength(spectrum).to_value(u.AA)
    keep = (wave >= window[0]) & (wave <= window[1])
    return Spectrum(wavelength=spectrum.wavelength[keep], flux=spectrum.flux[keep],
                    ivar=None if spectrum.ivar is None else spectrum.ivar[keep],
                    mask=spectrum.mask[keep], medium=spectrum.medium,
                    meta=dict(spectrum.meta), source="cutout")


def cutout_retrieval(vae, items, *, fractions=(0.95, 0.9, 0.8), split="test",
                     collection="MILES", ks=(1, 3)):
    """Search by example with a cutout of an archive spectrum: how often
    the original comes back within the first k, for cutouts covering
    ``fractions`` of the grid (alternately from the blue and the red end).

    Returns
    -------
    dict
        Per fraction: n queries, hit@k with standard errors.
    """
    index_items, z = _embedded(vae, items)
    queries = [(n, i) for n, i in enumerate(index_items)
               if i.kind == "star" and i.split == split and i.collection == collection]
    out = {}
    for fraction in fractions:
        cut = [cut_to_coverage(i.spectrum, fraction, blue_side=bool(k % 2))
               for k, (_, i) in enumerate(queries)]
        pairs = [observation.prepare_observed(c) for c in cut]
        zq = run(vae, np.stack([f for f, _ in pairs]),
                 np.stack([w for _, w in pairs]))[0].astype(np.float64)
        ranks = []
        for (own, _), q in zip(queries, zq):
            d = ((z - q) ** 2).sum(1)
            ranks.append(int((d <= d[own]).sum()))
        out[f"coverage_{fraction:g}"] = _hit_rates(ranks, ks)
    return out


def vae_metrics(vae, items):
    """Held-out figures of the VAE: kNN, search by example (copies, other
    libraries, cutouts), reconstruction, anomaly."""
    out = {"knn_k5_l2": latent_knn(vae, items),
           "knn_k5_l2_validation": latent_knn(vae, items, query_split="val"),
           "knn_k5_cosine": latent_knn(vae, items, metric="cosine"),
           "self_retrieval": self_retrieval(vae, items),
           "cross_library": cross_library_retrieval(vae, items),
           "cross_library_validation": cross_library_retrieval(vae, items,
                                                               split="val"),
           "cutouts": cutout_retrieval(vae, items)}
    groups = {
        "test_stars": [i for i in items if i.kind == "star" and i.split == "test"],
        "galaxies": [i for i in items if i.kind == "galaxy"],
        "qsos": [i for i in items if i.kind == "qso"],
    }
    for name, group in groups.items():
        flux, weight = prepared(group)
        mean, logvar, rec, anomaly = run(vae, flux, weight)
        covered = weight > 0
        l1 = np.array([np.mean(np.abs(f - r)[c]) if c.any() else np.nan
                       for f, r, c in zip(flux, rec, covered)])
        out[f"{name}_reconstruction_l1_median"] = float(np.nanmedian(l1))
        out[f"{name}_anomaly_median"] = float(np.nanmedian(anomaly))
        out[f"{name}_n"] = len(group)
        if name == "test_stars":
            out["test_stars_anomaly_p95"] = float(np.nanpercentile(anomaly, 95))
    return out


# --------------------------------------------------------------------------
# Classifier
# --------------------------------------------------------------------------

def classifier_metrics(model, items, split="test"):
    """Accuracy, confusion matrix and calibration on held-out real spectra
    (``split`` stars; the real galaxies and quasars only with "test")."""
    stars = [i for i in items if i.kind == "star" and i.split == split and i.label]
    others = [i for i in items if i.kind != "star"] if split == "test" else []
    flux, weight = prepared(stars + others)
    p, entropy = run(model, flux, weight)
    predicted = p.argmax(1)
    truth = np.array([catalogue.CLASS_INDEX[i.label] for i in stars + others])
    n = len(stars)
    confusion = np.zeros((len(catalogue.CLASSES), len(catalogue.CLASSES)), dtype=int)
    for t, q in zip(truth, predicted):
        confusion[t, q] += 1
    star_ok = predicted[:n] == truth[:n]
    main = np.array([i.label in catalogue.STAR_CLASSES for i in stars])
    per_class = {c: float(np.mean(star_ok[[i.label == c for i in stars]]))
                 for c in catalogue.CLASSES[:8] if any(i.label == c for i in stars)}
    # expected calibration error (10 bins) on the test stars, with a
    # bootstrap interval over stars, and the reliability diagram's bins
    conf = p[:n].max(1)
    ece, reliability = calibration(conf, star_ok)
    boot_rng = np.random.default_rng(2024)
    boots = [calibration(conf[b], star_ok[b])[0]
             for b in boot_rng.integers(0, n, size=(2000, n))]
    # errors between neighbouring classes at a boundary subclass (G8-G9
    # called K, K0-K2 called G, ...): where MK classes themselves blur
    order = "OBAFGKM"
    boundary = 0
    for item, q, ok in zip(stars, predicted[:n], star_ok):
        if ok or item.label not in order or catalogue.CLASSES[q] not in order:
            continue
        sub = subclass(item.spectrum.meta["mk_type"])
        step = order.index(catalogue.CLASSES[q]) - order.index(item.label)
        if sub is not None and ((step == 1 and sub >= 7) or (step == -1 and sub <= 2)):
            boundary += 1
    # wrong answers that the star's own catalogue Teff supports (a 'G8 V'
    # at 5080 K called K): the catalogue's type and Teff disagree there
    teff_backs_prediction = sum(
        1 for item, q, ok in zip(stars, predicted[:n], star_ok)
        if not ok and catalogue.teff_class(item.teff) == catalogue.CLASSES[q])
    real = []
    for item, q, e, prob in zip(others, predicted[n:], entropy[n:], p[n:]):
        covered = float(np.mean(observation.prepare_observed(item.spectrum)[1] > 0))
        real.append({"obs_id": item.obs_id, "truth": item.label,
                     "predicted": catalogue.CLASSES[q], "probability": float(prob.max()),
                     "uncertainty": float(e), "grid_coverage": round(covered, 3)})
    covered_others = [r for r in real if r["grid_coverage"] > 0.05]
    consistent = np.array([catalogue.label_consistent(i) for i in stars])
    removed = Counter(i.label for i, ok in zip(stars, consistent) if not ok)
    return {
        "test_star_accuracy": float(star_ok.mean()),
        "test_star_accuracy_label_consistent": float(star_ok[consistent].mean()),
        "n_test_stars_label_consistent": int(consistent.sum()),
        "test_star_main_class_accuracy": float(star_ok[main].mean()),
        "test_star_main_class_within_one": float(np.mean(
            np.abs(predicted[:n][main] - truth[:n][main]) <= 1)),
        "errors_at_subclass_boundary": int(boundary),
        "errors_backed_by_catalogue_teff": int(teff_backs_prediction),
        "errors": int((~star_ok).sum()),
        "n_test_stars": int(n),
        "per_class_recall": per_class,
        "expected_calibration_error": float(ece),
        "expected_calibration_error_95": [float(np.percentile(boots, (100 - ECE_LEVEL) / 2)),
                                          float(np.percentile(boots, (100 + ECE_LEVEL) / 2))],
        "reliability": reliability,
        "label_rule_removed_per_class": dict(sorted(removed.items())),
        "label_rule_removed_fraction": float(1 - consistent.mean()),
        "temperature": float(model.temperature),
        "real_galaxies_and_qsos": real,
        "real_extragalactic_correct": int(sum(r["truth"] == r["predicted"] for r in real)),
        "real_extragalactic_correct_with_coverage": int(
            sum(r["truth"] == r["predicted"] for r in covered_others)),
        "real_extragalactic_with_coverage": len(covered_others),
        "real_extragalactic_total": len(real),
        "confusion_matrix": confusion.tolist(),
        "labels": list(catalogue.CLASSES),
        "uncertainty_correct_median": float(np.median(entropy[:n][star_ok])),
        "uncertainty_wrong_median": float(np.median(entropy[:n][~star_ok])) if (~star_ok).any() else None,
    }


subclass = catalogue.subclass


#: Confidence level (%) of the ECE's bootstrap interval.
ECE_LEVEL = 95


def calibration(confidence, correct, bins=10):
    """Expected calibration error over ``bins`` equal-width confidence bins,
    and the bins (for a reliability diagram): lower edge, count, mean
    confidence, accuracy."""
    ece, rows = 0.0, []
    for lo in np.linspace(0, 1, bins + 1)[:-1]:
        sel = (confidence > lo) & (confidence <= lo + 1.0 / bins)
        if sel.any():
            gap = confidence[sel].mean() - correct[sel].mean()
            ece += sel.mean() * abs(gap)
            rows.append({"lo": float(lo), "n": int(sel.sum()),
                         "confidence": float(confidence[sel].mean()),
                         "accuracy": float(correct[sel].mean())})
    return float(ece), rows


def majority(rows):
    """Most frequent label of each row of neighbours (nearest first); a tie
    goes to the tied label seen first, so votes do not depend on hashing."""
    votes = []
    for row in rows:
        row = list(row)
        votes.append(max(row, key=lambda label: (row.count(label), -row.index(label))))
    return votes


def knn_class_baseline(items, k=5):
    """Accuracy of a model-free classifier: majority class of the k nearest
    training stars in prepared flux (L2), for held-out labelled stars."""
    train = [i for i in items if i.kind == "star" and i.split == "train" and i.label]
    test = [i for i in items if i.kind == "star" and i.split == "test" and i.label]
    fi, _ = prepared(train)
    fq, _ = prepared(test)
    d = (fq * fq).sum(1)[:, None] - 2 * fq @ fi.T + (fi * fi).sum(1)[None, :]
    nearest = np.argsort(d, axis=1)[:, :k]
    labels = np.array([i.label for i in train])
    votes = majority(labels[nearest])
    return float(np.mean([v == i.label for v, i in zip(votes, test)]))


def parameter_class_baseline(items, k=5, split="test"):
    """Accuracy of a classifier that sees the catalogue instead of the
    spectrum: majority MK class of the k training stars nearest in the
    catalogue's own (log Teff / 0.02, log g / 0.3), for ``split`` stars
    of the main classes O-M with both parameters.

    A model that learned each star's physical parameters perfectly could
    do about this well; what it misses is where the catalogue's MK type
    and its Teff and log g disagree (the ceiling the target runs into).
    """
    def usable(i):
        return i.kind == "star" and i.label in catalogue.STAR_CLASSES and i.teff and i.logg is not None

    def features(group):
        return np.array([[np.log10(i.teff) / 0.02, i.logg / 0.3] for i in group])

    train = [i for i in items if usable(i) and i.split == "train"]
    query = [i for i in items if usable(i) and i.split == split]
    d = ((features(query)[:, None, :] - features(train)[None, :, :]) ** 2).sum(-1)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
    labels = np.array([i.label for i in train])
    votes = majority(labels[nearest])
    return {"accuracy": float(np.mean([v == i.label for v, i in zip(votes, query)])),
            "n": len(query), "k": k}


# --------------------------------------------------------------------------
# Domain: when the class is published as unknown
# --------------------------------------------------------------------------

#: Percentile of the validation spectra's anomaly that sets the ceiling.
#: Not the maximum: the anomaly is a chi-square, so it grows with S/N, and
#: one peculiar high-S/N validation star (STELIB HD 184927, a He-strong B
#: star, five times the next) would set a ceiling no junk spectrum reaches.
ANOMALY_PERCENTILE = 99.0


def anomaly_ceiling(vae, items, split="val", percentile=ANOMALY_PERCENTILE):
    """The ``percentile`` of the VAE anomaly over the real spectra of
    ``split`` that cover enough of the grid to be embedded: beyond it, a
    spectrum is unlike what the models were checked on
    (``retrspect.anomaly_ceiling``; by construction 1% of such spectra lie
    beyond it)."""
    group = [i for i in items if i.split == split]
    flux, weight = prepared(group)
    keep = (weight > 0).mean(1) >= MIN_GRID_COVERAGE
    anomaly = run(vae, flux[keep], weight[keep])[3]
    return float(np.nanpercentile(anomaly, percentile))


def class_accuracy_by_coverage(classifier, items, *, split="val",
                               fractions=(1.0, 0.9, 0.8, 0.7, 0.6, 0.5)):
    """Accuracy of the classifier on ``split`` stars cut (alternately from
    the blue and the red end) to windows covering each fraction of the grid."""
    stars = [i for i in items if i.kind == "star" and i.split == split and i.label]
    truth = np.array([catalogue.CLASS_INDEX[i.label] for i in stars])
    rows = []
    for fraction in fractions:
        cut = [i.spectrum if fraction >= 1 else
               cut_to_coverage(i.spectrum, fraction, blue_side=bool(k % 2))
               for k, i in enumerate(stars)]
        pairs = [observation.prepare_observed(c) for c in cut]
        p = run(classifier, np.stack([f for f, _ in pairs]), np.stack([w for _, w in pairs]))[0]
        rows.append({"coverage": fraction, "accuracy": float(np.mean(p.argmax(1) == truth)),
                     "n": len(stars)})
    return rows


#: The committed choice of ``retrspect.min_class_coverage``.
CLASS_COVERAGE_RULE = ("the lowest grid coverage at which the validation stars' accuracy, "
                       "on cutouts of that coverage, is within `slack` of their accuracy "
                       "on whole spectra (coverages tried: 1.0, 0.9, ..., 0.5)")
CLASS_COVERAGE_SLACK = 0.05


def choose_class_coverage(rows, slack=CLASS_COVERAGE_SLACK):
    """The coverage :data:`CLASS_COVERAGE_RULE` picks from
    :func:`class_accuracy_by_coverage` rows: every coverage from 1 down to
    it must pass, so a lucky dip below a failure does not count."""
    full = next(r["accuracy"] for r in rows if r["coverage"] >= 1)
    chosen = 1.0
    for row in sorted(rows, key=lambda r: -r["coverage"]):
        if row["accuracy"] < full - slack:
            break
        chosen = row["coverage"]
    return chosen


def domain_metrics(vae, classifier, items, *, ceiling, min_coverage, n_synthetic=40,
                   seed=11):
    """How the unknown-class rule (:func:`ingest.contract.class_is_known`)
    treats held-out real spectra (test split: how many keep a class, and the
    accuracy of those) and synthetic out-of-domain spectra (how many are
    unknown, per kind of :func:`models.synthetic.out_of_domain`)."""
    from retrspect.ingest.contract import class_is_known
    from retrspect.models import synthetic

    def known(spectra):
        pairs = [observation.prepare_observed(s) for s in spectra]
        flux = np.stack([f for f, _ in pairs])
        weight = np.stack([w for _, w in pairs])
        anomaly = run(vae, flux, weight)[3]
        p = run(classifier, flux, weight)[0]
        coverage = (weight > 0).mean(1)
        keep = np.array([class_is_known(c, None if not np.isfinite(a) else float(a),
                                        min_class_coverage=min_coverage,
                                        anomaly_ceiling=ceiling)
                         for c, a in zip(coverage, anomaly)])
        return keep, p.argmax(1), coverage, anomaly

    out = {"anomaly_ceiling": ceiling, "min_class_coverage": min_coverage}
    test = [i for i in items if i.split == "test"]
    keep, predicted, coverage, anomaly = known([i.spectrum for i in test])
    right = predicted == np.array([catalogue.CLASS_INDEX.get(i.label, -1) for i in test])
    has_label = np.array([bool(i.label) for i in test])
    for kind in ("star", "galaxy", "qso"):
        sel = np.array([i.kind == kind for i in test])
        labelled = sel & has_label
        out[f"test_{kind}"] = {
            "n": int(sel.sum()), "class_known": int((keep & sel).sum()),
            "unknown_low_coverage": int((sel & (coverage < (min_coverage or 0))).sum()),
            "unknown_anomaly": int((sel & (coverage >= (min_coverage or 0)) & ~keep).sum()),
            "accuracy_known": float(right[labelled & keep].mean()) if (labelled & keep).any() else None,
            "accuracy_all": float(right[labelled].mean()) if labelled.any() else None}
    star = np.array([i.kind == "star" for i in test])
    out["test_star_anomaly_max"] = float(np.nanmax(anomaly[star]))
    rng = np.random.default_rng(seed)
    for kind in synthetic.OUT_OF_DOMAIN_KINDS:
        spectra = [synthetic.out_of_domain(rng, kind) for _ in range(n_synthetic)]
        keep, _, _, anomaly = known(spectra)
        out[f"synthetic_{kind}"] = {"n": n_synthetic, "unknown": int((~keep).sum()),
                                    "anomaly_median": float(np.nanmedian(anomaly))}
    return out


# --------------------------------------------------------------------------
# Velocity
# --------------------------------------------------------------------------

def injected_velocities(scanner, items, rng, *, split="test", labels=("F", "G", "K"),
                        collection="MILES", snr=50.0, per_star=5, vmax=300.0):
    """Shift held-out stars by known velocities, add noise at ``snr`` per
    native pixel (with errors), measure, compare.

    Returns
    -------
    dict
        Scatter figures in km/s and the raw arrays (for plots).
    """
    stars = [i for i in items if i.kind == "star" and i.split == split
             and i.label in labels and (collection is None or i.collection == collection)]
    spectra, truth, owner = [], [], []
    for n, item in enumerate(stars):
        for _ in range(per_star):
            v = float(rng.uniform(-vmax, vmax))
            obs = observation.Observation(z=float(observation.velocity_to_z(v)), snr=snr, errors=True,
                                medium="air")
            spectra.append(observation.observe(item.wave, item.flux, item.good, obs, rng,
                                     native_r=item.spectrum.meta["resolving_power"]))
            truth.append(v)
            owner.append(n)
    flux = np.zeros((len(spectra), MODEL_GRID.npix), np.float32)
    weight = np.zeros_like(flux)
    for row, s in enumerate(spectra):
        flux[row], weight[row] = observation.prepare_observed(s)
    z, err = run(scanner, flux, weight)
    v = observation.z_to_velocity(z)
    d = v - np.array(truth)
    owner = np.array(owner)
    ok = np.isfinite(d)
    offsets = np.array([np.median(d[(owner == o) & ok]) if np.any((owner == o) & ok) else np.nan
                        for o in range(len(stars))])
    within = d - offsets[owner]
    err_kms = err * C_KMS / (1 + z)
    pull = d / err_kms
    return {
        "n_stars": len(stars), "n_measurements": int(len(d)), "n_failed": int((~ok).sum()),
        "snr_per_native_pixel": snr,
        "std_kms": float(np.nanstd(d)),
        "robust_sigma_kms": float(1.4826 * np.nanmedian(np.abs(d - np.nanmedian(d)))),
        "bias_kms": float(np.nanmedian(d)),
        "within_star_std_kms": float(np.nanstd(within)),
        "star_offset_std_kms": float(np.nanstd(offsets)),
        "star_offset_robust_sigma_kms": float(1.4826 * np.nanmedian(
            np.abs(offsets - np.nanmedian(offsets)))),
        "outliers_over_20_kms": int(np.sum(np.abs(d) > 20)),
        "median_error_kms": float(np.nanmedian(err_kms)),
        "pull_robust_sigma": float(1.4826 * np.nanmedian(np.abs(pull - np.nanmedian(pull)))),
        "_delta": d, "_truth": np.array(truth),
    }


def velocity_metrics(scanner, items, seed):
    """All held-out velocity figures (arrays prefixed _ are for plots)."""
    rng = np.random.default_rng(seed)
    out = {"fgk_snr50": injected_velocities(scanner, items, rng)}
    out["fgk_snr50_with_stelib"] = injected_velocities(scanner, items, rng, collection=None,
                                                       per_star=2)
    out["oba_snr50"] = injected_velocities(scanner, items, rng, labels=("O", "B", "A"),
                                           collection=None, per_star=3)
    out["m_snr50"] = injected_velocities(scanner, items, rng, labels=("M",),
                                         collection=None, per_star=3)
    out["fgk_snr10"] = injected_velocities(scanner, items, rng, snr=10.0, per_star=2)
    # MaNGA spaxels against the galaxy's systemic redshift
    gal = [i for i in items if i.collection == "MaNGA"]
    flux, weight = prepared(gal)
    z, err = run(scanner, flux, weight)
    zsys = np.array([i.spectrum.meta["redshift"] for i in gal])
    dz = (z - zsys) / (1 + zsys)
    snr = [float(np.median(f[w > 0] * np.sqrt(w[w > 0]))) for f, w in zip(flux, weight)]
    out["manga"] = {
        "n": len(gal),
        "within_5e-4": int(np.sum(np.abs(dz) < 5e-4)),
        "abs_dz_median": float(np.nanmedian(np.abs(dz))),
        "rotation_equivalent_kms_median": float(np.nanmedian(np.abs(dz)) * C_KMS),
        "spaxels": [{"obs_id": i.obs_id, "z_systemic": float(zs), "z": float(zz),
                     "dz_over_1pz": float(d), "z_error": float(e),
                     "snr_per_pixel": round(s, 1)}
                    for i, zs, zz, d, e, s in zip(gal, zsys, z, dz, err, snr)],
    }
    out["synthetic_galaxies"] = galaxy_redshift_scan(scanner, rng)
    qso = [i for i in items if i.kind == "qso" or i.collection == "linetools-AGN"]
    flux, weight = prepared(qso)
    z, err = run(scanner, flux, weight)
    out["qso_and_agn"] = [{"obs_id": i.obs_id, "z_catalogue": i.spectrum.meta["redshift"],
                           "z": None if not np.isfinite(zz) else float(zz),
                           "grid_coverage": float(np.mean(w > 0))}
                          for i, zz, w in zip(qso, z, weight)]
    # the same star in MILES and STELIB: both libraries are in the rest
    # frame, so the difference measures the libraries' zero points
    by_id = {}
    for i in items:
        if i.kind == "star" and i.split == "test":
            by_id.setdefault(i.star_id, {})[i.collection] = i
    pairs = [(g["MILES"], g["STELIB"]) for g in by_id.values() if {"MILES", "STELIB"} <= set(g)]
    if pairs:
        fm, wm = prepared([a for a, _ in pairs])
        fs, ws = prepared([b for _, b in pairs])
        zm = run(scanner, fm, wm)[0]
        zs = run(scanner, fs, ws)[0]
        d = observation.z_to_velocity(zs) - observation.z_to_velocity(zm)
        out["stelib_minus_miles"] = {
            "n_stars": len(pairs), "median_kms": float(np.nanmedian(d)),
            "robust_sigma_kms": float(1.4826 * np.nanmedian(np.abs(d - np.nanmedian(d))))}
    return out


def galaxy_redshift_scan(scanner, rng, *, z_bins=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), per_bin=24,
                         snr=20.0, tolerance=2e-3):
    """Synthetic galaxies (stellar-population models, half with nebular
    lines) observed at redshifts drawn uniformly in each bin up to z = 1:
    per bin, how many cover enough of the grid to get a redshift
    (:data:`MIN_GRID_COVERAGE`), and how many of those the scanner places
    within ``tolerance`` in dz / (1 + z).

    The bundled population models start at 3200 A in the rest frame, so a
    synthetic galaxy beyond z ~ 0.6 covers less than half the grid (a real
    one would cover it all, its near-UV unmodelled): ``right`` counts the
    scanner's answers on what the synthetic spectrum covers, ``covered``
    how many the pipeline would publish a redshift for.
    """
    from retrspect.models import synthetic
    ssps = [t for t in synthetic.ssp_library() if not t.name.startswith("bpass")]
    rows = []
    for lo, hi in zip(z_bins[:-1], z_bins[1:]):
        spectra, truth, lines = [], [], []
        for k in range(per_bin):
            emission = bool(k % 2)
            g = synthetic.synthetic_galaxy(rng, ssps, emission=emission, second_component=False)
            z = float(rng.uniform(max(lo, 0.003), hi))
            obs = observation.Observation(z=z, snr=snr, medium="air")
            spectra.append(observation.observe(g.wave, g.flux, g.good, obs, rng))
            truth.append(z), lines.append(emission)
        pairs = [observation.prepare_observed(s) for s in spectra]
        flux = np.stack([f for f, _ in pairs])
        weight = np.stack([w for _, w in pairs])
        z, _ = run(scanner, flux, weight)
        truth, lines = np.array(truth), np.array(lines)
        covered = (weight > 0).mean(1) >= MIN_GRID_COVERAGE
        right = np.abs(z - truth) / (1 + truth) < tolerance
        rows.append({"z_lo": lo, "z_hi": hi, "n": per_bin, "right": int(right.sum()),
                     "right_with_lines": int((right & lines).sum()),
                     "with_lines": int(lines.sum()), "covered": int(covered.sum()),
                     "right_of_covered": int((right & covered).sum()),
                     "right_of_covered_with_lines": int((right & covered & lines).sum()),
                     "covered_with_lines": int((covered & lines).sum())})
    return {"snr": snr, "tolerance_dz_over_1pz": tolerance, "bins": rows}


def calibrate_velocity(scanner, items, seed):
    """Set the scanner's systematic floor from validation stars.

    The floor is the part of the robust scatter of injected-velocity
    residuals (validation FGK stars, SNR 50) that the statistical errors do
    not explain.  Returns the floor in km/s.
    """
    rng = np.random.default_rng(seed)
    scanner.sys_kms.fill_(0.0)
    found = injected_velocities(scanner, items, rng, split="val", collection=None, per_star=4)
    floor = math.sqrt(max(found["robust_sigma_kms"] ** 2 - found["median_error_kms"] ** 2, 0.0))
    scanner.sys_kms.fill_(floor)
    return floor


def public(metrics):
    """Metrics without the raw arrays (keys starting with '_'), JSON-ready."""
    if isinstance(metrics, dict):
        return {k: public(v) for k, v in metrics.items() if not str(k).startswith("_")}
    if isinstance(metrics, list):
        return [public(v) for v in metrics]
    if isinstance(metrics, (np.floating, np.integer)):
        return metrics.item()
    return metrics
