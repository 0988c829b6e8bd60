"""Training: losses, one epoch on small data, save/load (retrspect.models.train).
"""
import json

import numpy as np
import pytest
import torch

from retrspect.ingest import preprocess
from retrspect.ingest.preprocess import MODEL_GRID
from retrspect.models import evaluate as E
from retrspect.models import train as T
from retrspect.models.nets import SpectrumClassifier, SpectrumVAE


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
def plain_config(tiny_config):
    """tiny_config with the issue-13 terms off: the reconstruction, KL and
    supervision objective alone, for tests that add one term to it."""
    from dataclasses import replace
    return replace(tiny_config, vae_consistency=0.0, vae_consistency_temperature=0.0,
                   vae_pair_weight=0.0, vae_bank_weight=0.0)


def _fixed_vae_batch(small, cfg, n=32):
    rng = np.random.default_rng(123)
    material = T.Material(small, rng, cfg)
    samples = [T.vae_pair(material, rng) for _ in range(n)]
    return [torch.from_numpy(np.stack([s[k] for s in samples])) for k in range(4)]


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


def test_vae_consistency_pulls_the_latent_to_the_clean_observation(small, plain_config):
    """Issue 13 experiment option: the term is exactly weight x the squared
    distance between the latents of the input and of its clean target."""
    from dataclasses import replace
    batch = _fixed_vae_batch(small, plain_config, n=16)
    torch.manual_seed(0)
    model = SpectrumVAE(MODEL_GRID.npix, latent_dim=8)
    cfg = replace(plain_config, vae_consistency=7.0)
    with torch.no_grad():
        plain = T.vae_loss(model, *batch, plain_config, torch.Generator().manual_seed(0))[0]
        consistent = T.vae_loss(model, *batch, cfg, torch.Generator().manual_seed(0))[0]
        mean = model.encode(batch[0], batch[1])[0]
        clean = model.encode(batch[2], batch[3])[0]
        extra = float(7.0 * ((mean - clean) ** 2).sum(1).mean())
    assert extra > 0
    assert float(consistent) == pytest.approx(float(plain) + extra, rel=1e-5)


def test_scale_free_targets_keep_their_own_normalisation(small, tiny_config):
    """With vae_scale_free the target is the clean observation as prepared
    (median 1 over its covered pixels), whatever gain the input got."""
    from dataclasses import replace
    cfg = replace(tiny_config, vae_scale_free=True, vae_input_scale_sigma=0.3)
    rng = np.random.default_rng(5)
    material = T.Material(small, rng, cfg)
    gains = []
    for _ in range(12):
        flux, weight, target, mask, *_ = T.vae_pair(material, rng)
        assert np.median(target[mask > 0]) == pytest.approx(1.0, abs=0.02)
        gains.append(np.median(flux[weight > 0]))
    assert np.std(np.log(gains)) > 0.1  # the inputs' scales do vary


def test_cutout_windows_cover_the_drawn_share_of_the_grid():
    from retrspect.models.observation import cutout_window
    rng = np.random.default_rng(0)
    grid = MODEL_GRID
    full = np.log(grid.wavelength[-1] / grid.wavelength[0])
    for _ in range(20):
        lo, hi = cutout_window(rng, grid, (0.6, 1.0))
        assert grid.wavelength[0] - 1e-6 <= lo < hi <= grid.wavelength[-1] + 1e-6
        assert 0.6 - 1e-9 <= np.log(hi / lo) / full <= 1.0 + 1e-9


def test_library_pairs_are_one_star_in_two_libraries(items):
    """Issue 13 experiment option: positives for the cross-library term,
    from training stars only."""
    train = [i for i in items if i.kind == "star" and i.split == "train"]
    pairs = T.library_pairs(train)
    assert len(pairs) > 50
    for miles, stelib in pairs:
        assert miles.star_id == stelib.star_id
        assert (miles.collection, stelib.collection) == ("MILES", "STELIB")
        assert miles.split == stelib.split == "train"


def test_pair_loss_is_the_mean_squared_latent_distance():
    torch.manual_seed(0)
    model = SpectrumVAE(MODEL_GRID.npix, latent_dim=8)
    flux = torch.rand(4, MODEL_GRID.npix) + 0.5
    weight = torch.ones_like(flux)
    with torch.no_grad():
        assert float(T.pair_loss(model, flux, weight, flux, weight)) == 0.0
        other = flux.flip(1)
        a, b = model.encode(flux, weight)[0], model.encode(other, weight)[0]
        expected = float(((a - b) ** 2).sum(1).mean())
        assert expected > 0
        assert float(T.pair_loss(model, flux, weight, other, weight)) == \
            pytest.approx(expected, rel=1e-6)


def test_contrastive_pair_loss_is_infonce_on_squared_distances():
    torch.manual_seed(1)
    model = SpectrumVAE(MODEL_GRID.npix, latent_dim=8)
    flux_a = torch.rand(5, MODEL_GRID.npix) + 0.5
    flux_b = torch.rand(5, MODEL_GRID.npix) + 0.5
    weight = torch.ones_like(flux_a)
    with torch.no_grad():
        a, b = model.encode(flux_a, weight)[0], model.encode(flux_b, weight)[0]
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        logits = -d2 / 0.5
        expected = 0.5 * float(
            -torch.log_softmax(logits, 1).diagonal().mean()
            - torch.log_softmax(logits, 0).diagonal().mean())
        got = float(T.pair_loss(model, flux_a, weight, flux_b, weight, temperature=0.5))
        assert got == pytest.approx(expected, rel=1e-4)
        # matched pairs give a lower loss than the same latents mismatched
        aligned = float(T.pair_loss(model, flux_a, weight, flux_a, weight,
                                    temperature=0.5))
        assert aligned < got


def test_standardised_pair_distance_does_not_reward_shrinking_the_latent():
    """With standardised=True the pull is in units of the batch's spread:
    scaling every latent by 0.1 leaves it (nearly: the floor) unchanged,
    where the raw distance falls 100-fold."""
    means_a = torch.randn(16, 8)
    means_b = means_a + 0.3 * torch.randn(16, 8)

    def pull(a, b, standardised):
        spread = T.batch_spread(torch.cat([a, b])) if standardised else 1.0
        return float(((a - b) ** 2 / spread).sum(1).mean())

    assert pull(0.1 * means_a, 0.1 * means_b, False) == pytest.approx(
        0.01 * pull(means_a, means_b, False), rel=1e-5)
    ratio = pull(0.1 * means_a, 0.1 * means_b, True) / pull(means_a, means_b, True)
    assert 0.7 < ratio <= 1.0


def test_contrastive_consistency_is_infonce_of_input_and_clean_latents(small, plain_config):
    """vae_consistency_temperature turns the consistency term into InfoNCE
    between each augmented input and its own clean observation."""
    from dataclasses import replace
    batch = _fixed_vae_batch(small, plain_config, n=16)
    torch.manual_seed(0)
    model = SpectrumVAE(MODEL_GRID.npix, latent_dim=8)
    cfg = replace(plain_config, vae_consistency=5.0, vae_consistency_temperature=2.0)
    with torch.no_grad():
        plain = T.vae_loss(model, *batch, plain_config, torch.Generator().manual_seed(0))[0]
        contrastive = T.vae_loss(model, *batch, cfg, torch.Generator().manual_seed(0))[0]
        mean = model.encode(batch[0], batch[1])[0]
        clean = model.encode(batch[2], batch[3])[0]
        logits = -((mean[:, None, :] - clean[None, :, :]) ** 2).sum(-1) / 2.0
        nce = 0.5 * (-torch.log_softmax(logits, 1).diagonal()
                     - torch.log_softmax(logits, 0).diagonal())
    assert float(contrastive) == pytest.approx(float(plain) + 5.0 * float(nce.mean()), rel=1e-5)


def test_bank_loss_is_infonce_against_every_training_star():
    """Each star sample's logits run over the whole bank; its own star is
    the answer; galaxies and quasars (index -1) do not count."""
    torch.manual_seed(2)
    bank = torch.randn(7, 4)
    mean = torch.cat([bank[[3, 5]] + 0.01 * torch.randn(2, 4), torch.randn(1, 4)])
    star = torch.tensor([3, 5, -1])
    logits = -((mean[:2, None, :] - bank[None, :, :]) ** 2).sum(-1) / 0.5
    expected = float(-torch.log_softmax(logits, 1)[[0, 1], [3, 5]].mean())
    assert float(T.bank_loss(mean, star, bank, 0.5)) == pytest.approx(expected, rel=1e-5)
    # near its own star the loss is small; pointed at the wrong stars it is large
    assert float(T.bank_loss(mean, torch.tensor([5, 3, -1]), bank, 0.5)) > 10 * expected
    assert float(T.bank_loss(mean[2:], star[2:], bank, 0.5)) == 0.0


def test_vae_samples_name_their_training_star(small, tiny_config):
    rng = np.random.default_rng(11)
    material = T.Material(small, rng, tiny_config)
    for _ in range(12):
        sample = T.vae_pair(material, rng)
        star = int(sample[-1])
        if material.last_item is None:
            assert star == -1
        else:
            assert material.stars[star] is material.last_item
