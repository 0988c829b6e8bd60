"""Tests of the models: training, save/load, ONNX export, checks, analysis.

Small models are trained here on a few real bundled stars (seconds); the
shipped ONNX files in ``models/`` are checked for their metadata, their
contract with ingest, and for science on held-out real spectra.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from retrspect.ingest import contract, preprocess
from retrspect.ingest.errors import ModelError
from retrspect.ingest.infer import load_model
from retrspect.ingest.preprocess import MODEL_GRID, Grid
from retrspect.models import analysis as A
from retrspect.models import catalogue
from retrspect.models import observation
from retrspect.models import synthetic
from retrspect.models import evaluate as E
from retrspect.models import export as X
from retrspect.models import train as T
from retrspect.models.nets import SpectrumClassifier, SpectrumVAE


def _session(path):
    return load_model(path, threads=2).session


def _check(path, **expected):
    """The contract's checks: load (content hash included), then fit."""
    model = load_model(path, threads=1)
    contract.check_fits(model.description, **expected)
    return model.info


torch.set_num_threads(2)

#: the checkout these tests belong to (the code under test is installed)
CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def items():
    return catalogue.load_catalogue()


@pytest.fixture(scope="module")
def small(items):
    """A few training stars of several classes, plus their split labels."""
    picked = []
    for label in ("B", "A", "F", "G", "K", "M"):
        picked += [i for i in items if i.split == "train" and i.label == label][:4]
    return picked


@pytest.fixture(scope="module")
def tiny_config():
    return T.TrainConfig(vae_epochs=1, clf_epochs=1, vae_pool=512, clf_pool=256,
                         batch=16, galaxy_templates=4, qso_templates=4, lr=3e-3)


@pytest.fixture(scope="module")
def held_out_spectra(items):
    chosen = [i for i in items if i.split == "test"][::12] + \
        [i for i in items if i.kind != "star"]
    return E.prepared(chosen)


# --------------------------------------------------------------------------
# Data: splits and the shared preprocessing
# --------------------------------------------------------------------------

def test_splits_are_by_star_and_never_straddle(items):
    splits = {}
    for item in items:
        splits.setdefault(item.star_id, set()).add(item.split)
    assert all(len(s) == 1 for s in splits.values())
    # the MILES/STELIB duplicates exist and were merged under one identity
    both = [k for k in splits if {i.collection for i in items if i.star_id == k}
            >= {"MILES", "STELIB"}]
    assert len(both) >= 75
    assert all(i.split == "test" for i in items if i.kind in ("galaxy", "qso"))


def test_star_identity_normalises_names():
    assert catalogue.star_identity("HD002857", "x") == catalogue.star_identity("HD 2857", "y") == "HD2857"
    assert catalogue.star_identity("BD+012916", "x") == "BD+12916"
    assert catalogue.star_identity(None, "miles_m0001") == "miles_m0001"


def test_main_class_and_emission_labels(items):
    assert catalogue.main_class("sdF5") == "F" and catalogue.main_class("K4III") == "K"
    assert catalogue.main_class("WN") is None and catalogue.main_class("DA:") is None
    by_name = {i.spectrum.meta["target_name"]: i for i in items
               if i.collection == "STELIB"}
    # HD 33133 is a WN star with strong H-alpha / He II emission
    assert by_name["HD033133"].label == "emission_line_star"


def test_ordinal_target_follows_the_subclass(items):
    item = next(i for i in items if i.label == "G")
    item = catalogue.Item(spectrum=item.spectrum, kind="star", star_id="x", label="G")
    g, k, f = (catalogue.CLASSES.index(c) for c in "GKF")
    for mk, want in (("G8III", {g: 0.65, k: 0.35}), ("G5V", {g: 0.95, k: 0.05}),
                     ("G", {g: 1.0})):
        item.spectrum.meta["mk_type"] = mk
        target = catalogue.ordinal_target(item)
        expected = np.zeros(len(catalogue.CLASSES))
        for n, v in want.items():
            expected[n] = v
        assert np.allclose(target, expected, atol=1e-6), mk
    item.spectrum.meta["mk_type"] = "G0V"
    assert catalogue.ordinal_target(item)[f] == pytest.approx(0.45)


def test_label_consistency_rule():
    def star(label, teff):
        return catalogue.Item(spectrum=None, kind="star", star_id="x", label=label, teff=teff)
    assert catalogue.teff_class(5800) == "G" and catalogue.teff_class(40000) == "O" and catalogue.teff_class(3000) == "M"
    assert not catalogue.label_consistent(star("B", 6200))        # 'B5' at 6200 K: F by Teff
    assert catalogue.label_consistent(star("G", 4850))            # G8 giant at 4850 K: K, one off
    assert catalogue.label_consistent(star("K", None))
    assert catalogue.label_consistent(star("emission_line_star", 30000))


def test_forest_matches_the_observed_mean_transmission():
    rng = np.random.default_rng(3)
    wave = synthetic.fine_wavelength(900, 1300)
    z = 3.5
    sel = (wave > 1040) & (wave < 1185)
    target = np.mean(np.exp(-0.0018 * (wave[sel] * (1 + z) / 1215.67) ** 3.92))
    tau = np.zeros_like(wave)
    for centre in np.linspace(1040, 1185, 300):
        synthetic._add_tau(tau, wave, centre, 0.5, 30.0)
    scaled = np.exp(-synthetic.forest_scale(wave, tau, z) * tau)
    assert np.mean(scaled[sel]) == pytest.approx(target, abs=1e-3)
    assert np.mean(np.exp(-tau[sel])) > target + 0.05     # unscaled was too thin


def test_vae_supervision_ties_the_first_latents_to_parameters(small, tiny_config):
    from dataclasses import replace
    rng = np.random.default_rng(7)
    cfg = replace(tiny_config, vae_supervise=50.0)
    material = T.Material(small, rng, cfg)
    samples = [T.vae_pair(material, rng) for _ in range(16)]
    params, known = (np.stack([s[k] for s in samples]) for k in (4, 5))
    assert known.sum() > 0 and np.all(np.abs(params[known == 0]) == 0)
    batch = [torch.from_numpy(np.stack([s[k] for s in samples])) for k in range(6)]
    torch.manual_seed(0)
    model = SpectrumVAE(MODEL_GRID.npix, latent_dim=8)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        plain = T.vae_loss(model, *batch[:4], tiny_config, gen)[0]
        gen = torch.Generator().manual_seed(0)
        mean = model.encode(batch[0], batch[1])[0]
        extra = float(50.0 * ((mean[:, :3] - batch[4]) ** 2 * batch[5]).sum(1).mean())
        supervised = T.vae_loss(model, *batch[:4], cfg, gen, batch[4], batch[5])[0]
    assert float(supervised) == pytest.approx(float(plain) + extra, rel=1e-5)


def test_cli_module_entry_point_refuses_unknown_commands(capsys):
    from retrspect.models import cli
    assert cli.main([]) == 2 and cli.main(["bogus"]) == 2
    assert "usage" in capsys.readouterr().out


def test_benchmark_commands_say_what_is_missing(tmp_path, capsys):
    """`retrspect benchmark models` without checkpoints says to train first;
    a benchmark outside a checkout names the script it looked for."""
    from retrspect.models import cli
    from retrspect.vo_services import cli as retrspect_cli
    shipped = Path(cli.__file__).resolve().parent
    with pytest.raises(RuntimeError, match="run `retrspect train` first"):
        cli.benchmark(["--workdir", str(tmp_path), "--models-dir", str(shipped)])
    assert retrspect_cli.main(["benchmark", "--repo", str(tmp_path), "knn"]) == 1
    assert str(tmp_path / "tests" / "benchmarks" / "bench_knn.py") in capsys.readouterr().err


def test_model_commands_write_to_the_checkout_never_the_installed_package(
        tmp_path, monkeypatch, capsys):
    """export, analyse and benchmark default to models/ of the checkout they
    run in; outside a checkout they refuse rather than write into the
    installed package that ingest and the server load."""
    from retrspect.models import cli
    repo = CHECKOUT
    assert cli.checkout_models_dir(repo / "tests") == repo / "models"
    assert cli.checkout_models_dir(tmp_path) is None
    monkeypatch.chdir(tmp_path)
    for command, option in ((cli.export, "--out"), (cli.analyse, "--models-dir"),
                            (cli.benchmark, "--models-dir")):
        with pytest.raises(SystemExit) as stop:
            command(["--workdir", str(tmp_path)])
        assert stop.value.code == 2
        assert f"not inside a retrspect checkout: give {option}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_export_without_checkpoints_writes_nothing(tmp_path, capsys):
    from retrspect.models import cli
    out = tmp_path / "models"
    out.mkdir()
    assert cli.export(["--workdir", str(tmp_path / "empty"), "--out", str(out)]) == 1
    assert "run `retrspect train` first" in capsys.readouterr().out
    assert list(out.iterdir()) == []


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


def test_training_uses_ingest_prepare(items, small, tiny_config, monkeypatch):
    """Training's data pipeline calls the very function ingest calls."""
    calls = []
    real = preprocess.prepare

    def spy(spectrum, grid):
        calls.append(grid)
        return real(spectrum, grid)

    monkeypatch.setattr(preprocess, "prepare", spy)
    rng = np.random.default_rng(0)
    material = T.Material(small, rng, tiny_config)
    T.vae_pair(material, rng)
    T.classifier_sample(material, rng)
    E.prepared(small[:2])
    assert len(calls) == 2 + 1 + 2 and all(g == MODEL_GRID for g in calls)


# --------------------------------------------------------------------------
# Training lowers the loss; save and load
# --------------------------------------------------------------------------

def _fixed_vae_batch(small, cfg, n=32):
    rng = np.random.default_rng(123)
    material = T.Material(small, rng, cfg)
    samples = [T.vae_pair(material, rng) for _ in range(n)]
    return [torch.from_numpy(np.stack([s[k] for s in samples])) for k in range(4)]


def test_vae_one_epoch_lowers_the_loss(small, tiny_config):
    batch = _fixed_vae_batch(small, tiny_config)
    torch.manual_seed(tiny_config.seed)
    untrained = SpectrumVAE(MODEL_GRID.npix, latent_dim=tiny_config.latent_dim)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = T.vae_loss(untrained, *batch, tiny_config, gen)[0]
    model, history = T.train_vae(small, tiny_config, progress=False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        after = T.vae_loss(model, *batch, tiny_config, gen)[0]
    assert len(history) == 1 and history[0]["loss"] > 0
    assert after < 0.9 * before      # untrained or broken training: ~1


def test_classifier_one_epoch_lowers_the_loss(small, tiny_config):
    rng = np.random.default_rng(5)
    material = T.Material(small, rng, tiny_config)
    samples = [T.classifier_sample(material, rng) for _ in range(48)]
    flux = torch.from_numpy(np.stack([s[0] for s in samples]))
    weight = torch.from_numpy(np.stack([s[1] for s in samples]))
    label = torch.tensor([s[2] for s in samples])

    def nll(model):
        with torch.no_grad():
            p = model(flux, weight)[0]
        return float(-torch.log(p[torch.arange(len(label)), label]).mean())

    torch.manual_seed(tiny_config.seed + 1)
    untrained = SpectrumClassifier(MODEL_GRID.npix, heads=tiny_config.heads)
    model, _ = T.train_classifier(small, tiny_config, progress=False)
    assert nll(model) < nll(untrained)


def test_save_then_load_gives_identical_outputs(tmp_path, held_out_spectra):
    torch.manual_seed(0)
    model = SpectrumVAE(MODEL_GRID.npix, latent_dim=8).eval()
    path = T.save_checkpoint(tmp_path / "vae.pt", model, name="vae", config={},
                             history=[], metrics={"x": 1.0})
    again = T.load_checkpoint(path)
    flux, weight = (torch.as_tensor(a[:16]) for a in held_out_spectra)
    with torch.inference_mode():
        for a, b in zip(model(flux, weight), again["model"](flux, weight)):
            assert torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
    assert json.loads((tmp_path / "vae.json").read_text())["metrics"] == {"x": 1.0}


# --------------------------------------------------------------------------
# ONNX export, metadata and checks
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("onnx")
    vae = SpectrumVAE(MODEL_GRID.npix, latent_dim=16).eval()
    clf = SpectrumClassifier(MODEL_GRID.npix, heads=2).eval()
    clf.temperature.fill_(1.7)
    paths = {
        "vae": X.export(vae, "vae", MODEL_GRID, out, metrics={"a": 1},
                        extra={"latent_dim": 16, "metric": "l2"}),
        "classifier": X.export(clf, "classifier", MODEL_GRID, out,
                               extra={"labels": json.dumps(list(catalogue.CLASSES))}),
    }
    return {"vae": (vae, paths["vae"]), "classifier": (clf, paths["classifier"])}


@pytest.mark.parametrize("name", ["vae", "classifier"])
def test_onnx_equals_torch(exported, held_out_spectra, name):
    model, path = exported[name]
    flux, weight = held_out_spectra
    diffs = X.compare_with_torch(model, path, flux, weight)
    assert max(v for k, v in diffs.items() if k != "max_relative") < 1e-4 or \
        diffs["max_relative"] < 1e-4


def test_export_name_is_content_hash_and_metadata_complete(exported):
    import hashlib
    _, path = exported["vae"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert path.name == f"vae-{digest}.onnx"
    meta = load_model(path).metadata
    for key in ("model", "version", "grid", "normalisation", "opset", "training_data",
                "source_commit", "metrics", "latent_dim", "metric"):
        assert key in meta, key
    assert meta["model"] == "vae" and meta["latent_dim"] == "16" and meta["metric"] == "l2"
    assert Grid.from_json(meta["grid"]) == MODEL_GRID
    assert meta["opset"] == str(X.OPSET)


def test_mismatched_grid_or_dimension_is_refused(exported):
    _, path = exported["vae"]
    assert _check(path, kind="vae", grid=MODEL_GRID, latent_dim=16)["latent_dim"] == 16
    with pytest.raises(ModelError, match="latent dimension 16 does not match the expected 32"):
        _check(path, latent_dim=32)
    other = Grid.spanning(3800.0, 9000.0, 1024)
    with pytest.raises(ModelError, match="does not match the expected grid"):
        _check(path, grid=other)
    with pytest.raises(ModelError, match="expected 'classifier'"):
        _check(path, kind="classifier")


def test_renamed_or_edited_file_is_refused(exported, tmp_path):
    _, path = exported["classifier"]
    copy = tmp_path / "classifier-000000000000.onnx"
    copy.write_bytes(path.read_bytes())
    with pytest.raises(ModelError, match="content hash"):
        _check(copy)


def test_classifier_gives_uniform_probabilities_without_coverage(exported):
    model, path = exported["classifier"]
    sess = _session(path)
    flux = np.zeros((2, MODEL_GRID.npix), np.float32)
    p, u = sess.run(None, {"flux": flux, "weight": flux})
    assert np.allclose(p, 0.1, atol=1e-6)
    assert np.allclose(u, math.log(10), atol=1e-5)


# --------------------------------------------------------------------------
# The shipped models
# --------------------------------------------------------------------------

def shipped_path(kind):
    paths = X.shipped(kind=kind)
    assert len(paths) == 1, f"expected one shipped {kind} model, found {paths}"
    return paths[0]


@pytest.mark.parametrize("kind,outputs", [
    ("vae", ["latent_mean", "latent_logvar", "reconstruction", "anomaly"]),
    ("classifier", ["probabilities", "uncertainty"]),
    ("velocity", ["redshift", "redshift_error"]),
])
def test_shipped_model_contract(kind, outputs, held_out_spectra):
    path = shipped_path(kind)
    assert path.stat().st_size < 5e6
    meta = _check(path, kind=kind, grid=MODEL_GRID)
    assert meta["version"] == "1.0.0"
    assert json.loads(load_model(path).metadata["metrics"])
    sess = _session(path)
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


def test_shipped_velocity_recovers_an_injected_shift(items):
    path = shipped_path("velocity")
    sess = _session(path)
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


def test_shipped_velocity_finds_manga_redshifts(items):
    sess = _session(shipped_path("velocity"))
    manga = [i for i in items if i.collection == "MaNGA"]
    flux, weight = E.prepared(manga)
    z = sess.run(None, {"flux": flux, "weight": weight})[0]
    zsys = np.array([i.spectrum.meta["redshift"] for i in manga])
    assert np.sum(np.abs(z - zsys) / (1 + zsys) < 5e-4) >= 9


def test_shipped_classifier_on_real_extragalactic_spectra(items):
    sess = _session(shipped_path("classifier"))
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


class _Identity(torch.nn.Module):
    """A 'VAE' whose latent is the prepared flux itself: faithful to the
    spectrum, so copies should find their original."""

    def forward(self, flux, weight):
        return (flux,)


class _Constant(torch.nn.Module):
    """A 'VAE' that maps every spectrum to the same point."""

    def forward(self, flux, weight):
        return (torch.zeros(len(flux), 32),)


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


def test_shipped_vae_finds_user_copies_of_held_out_stars(items):
    """Search by example's promise on the shipped model: most user copies of
    held-out stars (2% noise) find their original first among all 1253."""
    from retrspect.models.report import _TorchLike
    vae = _TorchLike(load_model(shipped_path("vae"), threads=2))
    figures = E.self_retrieval(vae, items, noises=(0.02,))["noise_0.02"]
    assert figures["n_queries"] > 300
    assert figures["first"] >= 0.85 and figures["top5"] >= 0.95


def test_supervision_sweep_rule_keeps_search_by_example():
    """The lowest log g wins only among weights whose self-retrieval stays
    near the best: 30 has the best gravity but loses search by example."""
    from retrspect.models.cli import choose_supervision

    def row(weight, logg, first2, first5):
        return {"weight": weight, "val": {"logg_mae": logg, "self_retrieval_noise_0.02": first2,
                                          "self_retrieval_noise_0.05": first5}}
    rows = [row(0, 0.33, 0.92, 0.70), row(3, 0.26, 0.95, 0.76), row(10, 0.25, 0.94, 0.75),
            row(30, 0.24, 0.87, 0.60)]
    assert choose_supervision(rows, slack=0.02) == 10
    assert choose_supervision(rows, slack=0.005) == 3
    assert choose_supervision(rows, slack=1.0) == 30


def test_catalogue_parameter_baseline_scores_its_own_labels(items):
    """The catalogue-parameter classifier is a real baseline: perfect when the
    labels are a function of Teff, short of perfect on the MK types."""
    from dataclasses import replace
    by_teff = [replace(i, label=catalogue.teff_class(i.teff)) if i.kind == "star" and i.teff
               and i.label in catalogue.STAR_CLASSES else i for i in items]
    assert E.parameter_class_baseline(by_teff, k=1)["accuracy"] > 0.95
    real = E.parameter_class_baseline(items)
    assert real["n"] > 200 and 0.6 < real["accuracy"] < 0.9


# --------------------------------------------------------------------------
# Analysis: known mutual information, MAD rule
# --------------------------------------------------------------------------

@pytest.mark.parametrize("rho", [0.0, 0.6, 0.9])
def test_ksg_recovers_gaussian_mutual_information(rho):
    rng = np.random.default_rng(1)
    x = rng.normal(size=2000)
    y = rho * x + math.sqrt(1 - rho ** 2) * rng.normal(size=2000)
    truth = -0.5 * math.log2(1 - rho ** 2)
    assert A.mi_ksg(x, y) == pytest.approx(truth, abs=0.05)
    # monotonic maps do not change MI
    assert A.mi_ksg(np.exp(x), y ** 3) == pytest.approx(truth, abs=0.05)


def test_histogram_mi_is_close_for_a_strong_dependence():
    rng = np.random.default_rng(2)
    x = rng.normal(size=5000)
    y = 0.9 * x + math.sqrt(1 - 0.81) * rng.normal(size=5000)
    # 10 x 10 bins lose some information: biased low, but not by much
    assert A.mi_histogram(x, y) == pytest.approx(-0.5 * math.log2(1 - 0.81), abs=0.35)


def test_latent_information_of_a_known_gaussian_channel():
    # z = mu(x) + sigma eps with mu ~ N(0, s^2): I(x; z) = 1/2 log2(1 + s^2 / sigma^2)
    rng = np.random.default_rng(3)
    n = 1500
    mean = np.column_stack([rng.normal(0, 3.0, n), rng.normal(0, 0.05, n)])
    logvar = np.log(np.full((n, 2), 1.0))
    info = A.latent_information(mean, logvar, rng=rng)
    assert info[0] == pytest.approx(0.5 * math.log2(1 + 9.0), abs=0.15)
    assert info[1] < 0.02
    mad, informative = A.mad_rule(mean)
    assert informative.tolist() == [True, True]
    mad, informative = A.mad_rule(np.column_stack([mean[:, 0], 0.001 * mean[:, 1]]))
    assert informative.tolist() == [True, False]
