"""The shipped ONNX models against their targets and the contract.
"""
import json
import math

import numpy as np
import pytest

from retrspect.ingest import preprocess
from retrspect.ingest.infer import load_model
from retrspect.ingest.preprocess import MODEL_GRID
from retrspect.models import catalogue
from retrspect.models import observation
from retrspect.models import evaluate as E
from retrspect.models import export as X


def shipped_path(kind):
    paths = X.shipped(kind=kind)
    assert len(paths) == 1, f"expected one shipped {kind} model, found {paths}"
    return paths[0]


@pytest.mark.parametrize("kind,outputs", [
    ("vae", ["latent_mean", "latent_logvar", "reconstruction", "anomaly"]),
    ("classifier", ["probabilities", "uncertainty"]),
    ("velocity", ["redshift", "redshift_error"]),
])
def test_shipped_model_contract(kind, outputs, held_out_spectra, checked_info, session_of):
    path = shipped_path(kind)
    assert path.stat().st_size < 5e6
    meta = checked_info(path, kind=kind, grid=MODEL_GRID)
    assert meta["version"] == "1.0.0"
    assert json.loads(load_model(path).metadata["metrics"])
    sess = session_of(path)
    assert [o.name for o in sess.get_outputs()] == outputs
    assert [i.name for i in sess.get_inputs()] == ["flux", "weight"]
    flux, weight = held_out_spectra
    got = sess.run(None, {"flux": flux[:5], "weight": weight[:5]})
    assert all(g.shape[0] == 5 for g in got)
    if kind == "vae":
        assert got[0].shape == (5, meta["latent_dim"]) and meta["metric"] in ("l2", "cosine")
        assert got[2].shape == (5, MODEL_GRID.npix)
    if kind == "classifier":
        assert meta["labels"] == list(catalogue.CLASSES)
        assert np.allclose(got[0].sum(1), 1.0, atol=1e-5)


def test_shipped_velocity_recovers_an_injected_shift(items, session_of):
    path = shipped_path("velocity")
    sess = session_of(path)
    rng = np.random.default_rng(3)
    star = next(i for i in items if i.split == "test" and i.label == "G"
                and i.collection == "MILES")
    spectra = [observation.observe(star.wave, star.flux, star.good,
                         observation.Observation(z=float(observation.velocity_to_z(v)), snr=200, medium="air"),
                         rng, native_r=star.spectrum.meta["resolving_power"])
               for v in (-150.0, 0.0, 220.0)]
    flux, weight = preprocess.prepare_batch(spectra, MODEL_GRID)
    z, err = sess.run(None, {"flux": flux, "weight": weight})
    v = observation.z_to_velocity(z)
    assert np.allclose(v - v[1], [-150.0, 0.0, 220.0], atol=5.0)
    assert np.all((err * 299792.458 > 0.3) & (err * 299792.458 < 30))


def test_shipped_velocity_finds_manga_redshifts(items, session_of):
    sess = session_of(shipped_path("velocity"))
    manga = [i for i in items if i.collection == "MaNGA"]
    flux, weight = E.prepared(manga)
    z = sess.run(None, {"flux": flux, "weight": weight})[0]
    zsys = np.array([i.spectrum.meta["redshift"] for i in manga])
    assert np.sum(np.abs(z - zsys) / (1 + zsys) < 5e-4) >= 9


def test_shipped_classifier_on_real_extragalactic_spectra(items, session_of):
    sess = session_of(shipped_path("classifier"))
    others = [i for i in items if i.kind != "star"]
    flux, weight = E.prepared(others)
    p, u = sess.run(None, {"flux": flux, "weight": weight})
    covered = (weight > 0).mean(1) > 0.05
    names = np.array(catalogue.CLASSES)[p.argmax(1)]
    truth = np.array([i.label for i in others])
    # the MaNGA spaxels are galaxies (one at S/N ~2 per pixel may not be)
    manga = np.array([i.collection == "MaNGA" for i in others])
    assert np.sum(names[manga] == "galaxy") >= 9
    # the two that do not overlap the grid get maximal uncertainty
    assert np.allclose(u[~covered], math.log(10), atol=1e-4)
    assert np.mean(names[covered] == truth[covered]) >= 0.75


def test_shipped_vae_finds_user_copies_of_held_out_stars(items):
    """Search by example's promise on the shipped model: most user copies of
    held-out stars (2% noise) find their original first among all 1253."""
    from retrspect.models.report import _TorchLike
    vae = _TorchLike(load_model(shipped_path("vae"), threads=2))
    figures = E.self_retrieval(vae, items, noises=(0.02,))["noise_0.02"]
    assert figures["n_queries"] > 300
    assert figures["first"] >= 0.85 and figures["top5"] >= 0.95


def _shipped_torch_like(kind):
    from retrspect.models.report import _TorchLike
    model = load_model(shipped_path(kind), threads=2)
    return model, _TorchLike(model)


def test_shipped_models_give_no_class_outside_their_domain(items):
    """The unknown-class rule with the shipped metadata: nearly every
    held-out real star keeps its class; synthetic spectra no model learned
    (fringes, broken calibration, a line forest, a stitching step) do not."""
    from retrspect.models import synthetic
    vae_model, vae = _shipped_torch_like("vae")
    clf_model, clf = _shipped_torch_like("classifier")
    assert vae_model.anomaly_ceiling > 0 and 0.5 <= clf_model.min_class_coverage <= 1.0
    figures = E.domain_metrics(vae, clf, items, ceiling=vae_model.anomaly_ceiling,
                               min_coverage=clf_model.min_class_coverage, n_synthetic=10)
    stars = figures["test_star"]
    assert stars["class_known"] >= 0.9 * stars["n"]
    assert stars["unknown_anomaly"] <= 0.03 * stars["n"]
    # the card's figures: fringes pass for line patterns half the time,
    # the others nearly never
    unknown = [figures[f"synthetic_{kind}"]["unknown"] for kind in synthetic.OUT_OF_DOMAIN_KINDS]
    assert sum(unknown) >= 0.75 * 10 * len(unknown)
    assert min(unknown) >= 3, dict(zip(synthetic.OUT_OF_DOMAIN_KINDS, unknown))


def test_shipped_velocity_scans_galaxies_to_z_1(session_of):
    """Synthetic galaxies up to z = 0.8 are placed; between 0.8 and 1, where
    only the rest-frame 3200-4000 A of the templates is left on the grid,
    a fair share still is (none could be before the scan reached z = 1)."""
    _, scanner = _shipped_torch_like("velocity")
    scan = E.galaxy_redshift_scan(scanner, np.random.default_rng(5))
    bins = scan["bins"]
    assert bins[-1]["z_hi"] == 1.0
    for b in bins[:-1]:
        assert b["right"] >= 0.8 * b["n"], b
    assert bins[-1]["right"] >= 0.25 * bins[-1]["n"], bins[-1]


def test_shipped_classifier_calibration_is_measured_with_an_interval(items):
    """The ECE of the shipped classifier on held-out stars, with a bootstrap
    interval that contains it."""
    _, clf = _shipped_torch_like("classifier")
    m = E.classifier_metrics(clf, items)
    low, high = m["expected_calibration_error_95"]
    assert low <= m["expected_calibration_error"] <= high
    assert sum(b["n"] for b in m["reliability"]) == m["n_test_stars"]


def test_shipped_vae_finds_cutouts_of_held_out_stars(items):
    """Issue 11: a cutout covering at least 80% of the grid finds its
    original among the first 3 for most held-out MILES stars."""
    _, vae = _shipped_torch_like("vae")
    cut = E.cutout_retrieval(vae, items, fractions=(0.8,))["coverage_0.8"]
    assert cut["n"] > 150 and cut["hit@3"] >= 0.8
