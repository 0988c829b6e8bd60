"""Evaluation metrics and baselines (retrspect.models.evaluate).
"""

import numpy as np
import pytest
import torch

from retrspect.ingest import preprocess
from retrspect.models import catalogue
from retrspect.models import evaluate as E


class _Identity(torch.nn.Module):
    """A 'VAE' whose latent is the prepared flux itself: faithful to the
    spectrum, so copies should find their original."""

    def forward(self, flux, weight):
        return (flux,)


class _Constant(torch.nn.Module):
    """A 'VAE' that maps every spectrum to the same point."""

    def forward(self, flux, weight):
        return (torch.zeros(len(flux), 32),)


def test_classifier_metrics_count_errors_the_catalogue_teff_supports(items):
    """A classifier that always says K: its wrong answers the catalogue Teff
    backs are exactly the non-K held-out stars whose Teff is K-like."""
    k = catalogue.CLASSES.index("K")

    class AlwaysK(torch.nn.Module):
        temperature = torch.ones(())

        def forward(self, flux, weight):
            p = torch.zeros(flux.shape[0], len(catalogue.CLASSES))
            p[:, k] = 1.0
            return p, torch.zeros(flux.shape[0])

    m = E.classifier_metrics(AlwaysK(), items, split="val")
    stars = [i for i in items if i.kind == "star" and i.split == "val" and i.label]
    assert m["n_test_stars"] == len(stars)
    assert m["test_star_accuracy"] == pytest.approx(np.mean([i.label == "K" for i in stars]))
    expected = sum(1 for i in stars if i.label != "K" and catalogue.teff_class(i.teff) == "K")
    assert expected > 0 and m["errors_backed_by_catalogue_teff"] == expected
    assert m["real_galaxies_and_qsos"] == []


def test_self_retrieval_tells_a_faithful_latent_from_a_blind_one(items):
    subset = [i for i in items if i.split == "val"][:40] + \
        [i for i in items if i.split == "train"][:200]
    faithful = E.self_retrieval(_Identity(), subset, noises=(0.02,), copies=1)["noise_0.02"]
    blind = E.self_retrieval(_Constant(), subset, noises=(0.02,), copies=1)["noise_0.02"]
    assert faithful["n_queries"] == blind["n_queries"] == 40
    assert faithful["first"] >= 0.8
    # every spectrum ties with every other: the original is never first
    assert blind["first"] == 0.0 and blind["median_rank"] == faithful["n_index"]


def test_user_copy_is_resampled_noisy_and_without_archive_knowledge(items):
    star = next(i for i in items if i.collection == "MILES")
    copy = E.user_copy(star.spectrum, np.random.default_rng(0), noise=0.05)
    wave = copy.wavelength.to_value("Angstrom")
    assert np.allclose(np.diff(wave), 1.37) and wave[0] >= 3600.0
    assert copy.medium == "vacuum" and copy.ivar is None
    assert copy.meta["resolving_power"] is None
    served = np.interp(wave, preprocess.vacuum_wavelength(star.spectrum).value,
                       star.spectrum.flux.value)
    assert 0.04 < np.std(copy.flux.value / served - 1) < 0.06


def test_catalogue_parameter_baseline_scores_its_own_labels(items):
    """The catalogue-parameter classifier is a real baseline: perfect when the
    labels are a function of Teff, short of perfect on the MK types."""
    from dataclasses import replace
    by_teff = [replace(i, label=catalogue.teff_class(i.teff)) if i.kind == "star" and i.teff
               and i.label in catalogue.STAR_CLASSES else i for i in items]
    assert E.parameter_class_baseline(by_teff, k=1)["accuracy"] > 0.95
    real = E.parameter_class_baseline(items)
    assert real["n"] > 200 and 0.6 < real["accuracy"] < 0.9


def test_cross_library_retrieval_counts_pairs_and_tells_latents_apart(items):
    """Every held-out star with spectra in both libraries queries once per
    spectrum; prepared flux as the latent finds some counterparts, a
    constant latent finds none first (ties count against the query)."""
    pairs = {}
    for i in items:
        if i.kind == "star" and i.split == "test":
            pairs.setdefault(i.star_id, set()).add(i.collection)
    both = sum({"MILES", "STELIB"} <= libraries for libraries in pairs.values())
    flux = E.cross_library_retrieval(_Identity(), items)
    blind = E.cross_library_retrieval(_Constant(), items)
    # a star whose STELIB spectrum covers too little of the grid is not
    # embedded, so not a pair: at most one such star
    assert both - 1 <= flux["MILES->STELIB"]["n"] <= both
    assert blind["MILES->STELIB"]["hit@10"] == 0.0
    assert blind["STELIB->MILES whole archive"]["hit@1"] == 0.0
    assert flux["MILES->STELIB"]["hit@10"] > 0.3
    p, n = flux["MILES->STELIB"]["hit@10"], flux["MILES->STELIB"]["n"]
    assert flux["MILES->STELIB"]["hit@10_se"] == pytest.approx(
        (p * (1 - p) / n) ** 0.5)


def test_cutouts_cover_the_asked_fraction_and_the_whole_spectrum_is_found(items):
    star = next(i for i in items if i.collection == "MILES" and i.split == "test")
    grid = preprocess.MODEL_GRID
    for fraction, blue in ((0.8, True), (0.9, False)):
        cut = E.cut_to_coverage(star.spectrum, fraction, blue_side=blue)
        _, weight = preprocess.prepare(cut, grid)
        assert preprocess.grid_coverage(weight) == pytest.approx(fraction, abs=0.01)
    test = [i for i in items if i.split == "test" and i.collection == "MILES"][:10]
    found = E.cutout_retrieval(_Identity(), test + [i for i in items
                                                    if i.split == "train"][:100],
                               fractions=(1.0,))["coverage_1"]
    assert found["n"] == 10 and found["hit@1"] == 1.0


def test_calibration_error_and_bins():
    """Two bins: 0.95 confident and always right (gap 0.05), 0.55 confident
    and right half the time (gap 0.05): ECE 0.05; a perfect one is 0."""
    conf = np.array([0.95] * 4 + [0.55] * 4)
    right = np.array([1, 1, 1, 1, 1, 0, 1, 0], bool)
    ece, rows = E.calibration(conf, right)
    assert ece == pytest.approx(0.05)
    assert [(r["lo"], r["n"]) for r in rows] == [(pytest.approx(0.5), 4), (pytest.approx(0.9), 4)]
    assert rows[0]["accuracy"] == pytest.approx(0.5)
    assert E.calibration(np.array([1.0, 1.0]), np.array([True, True]))[0] == 0.0


def test_class_coverage_rule_stops_at_the_first_failure():
    rows = [{"coverage": c, "accuracy": a} for c, a in
            [(1.0, 0.90), (0.9, 0.89), (0.8, 0.86), (0.7, 0.80), (0.6, 0.88), (0.5, 0.70)]]
    # 0.7 falls more than 0.05 below 0.90; 0.6 recovers but comes after a failure
    assert E.choose_class_coverage(rows) == 0.8
    assert E.choose_class_coverage(rows, slack=0.2) == 0.5
    assert E.choose_class_coverage(rows, slack=0.0) == 1.0


def test_unknown_rule_figures_on_a_classifier_that_sees_everything(items):
    """With no ceiling the anomaly half is off; min coverage 0.5 keeps every
    test star that covers half the grid, so the counts follow coverage."""
    from retrspect.models import synthetic

    class _Uniform(torch.nn.Module):
        def forward(self, flux, weight):
            n = len(flux)
            p = torch.full((n, len(catalogue.CLASSES)), 1.0 / len(catalogue.CLASSES))
            return p, torch.zeros(n)

    class _Anomaly(torch.nn.Module):
        """Anomaly = how far the covered flux strays from its median."""
        def forward(self, flux, weight):
            covered = weight > 0
            dev = ((flux - 1.0).abs() * covered).sum(1) / covered.sum(1).clamp_min(1)
            z = torch.zeros(len(flux), 2)
            return z, z, flux, dev

    got = E.domain_metrics(_Anomaly(), _Uniform(), items, ceiling=None, min_coverage=0.5,
                           n_synthetic=3)
    test = [i for i in items if i.split == "test"]
    covered = (E.prepared(test)[1] > 0).mean(1) >= 0.5
    assert sum(got[f"test_{k}"]["class_known"] for k in ("star", "galaxy", "qso")) == covered.sum()
    assert all(got[f"synthetic_{k}"]["unknown"] == 0 for k in synthetic.OUT_OF_DOMAIN_KINDS)
    # a ceiling of 0 makes every synthetic spectrum unknown
    strict = E.domain_metrics(_Anomaly(), _Uniform(), items, ceiling=0.0, min_coverage=0.5,
                              n_synthetic=3)
    assert all(strict[f"synthetic_{k}"]["unknown"] == 3 for k in synthetic.OUT_OF_DOMAIN_KINDS)
