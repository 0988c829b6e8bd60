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
