"""Training: augmented samples, the VAE and classifier loops, checkpoints.

Every training sample is made by :func:`retrspect.models.observation.observe` (an
archive-like copy of a rest-frame spectrum) and put on the grid by
:func:`ingest.preprocess.prepare` - the function ingest runs - through
:func:`retrspect.models.observation.prepare_observed`.

Seeds are fixed (numpy ``default_rng(seed)``, ``torch.manual_seed``);
``torch.set_num_threads`` is set by the caller (the CLI uses 2).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from retrspect.ingest.preprocess import MODEL_GRID
from retrspect.models import catalogue, observation, synthetic
from retrspect.models.nets import SpectrumClassifier, SpectrumVAE


#: Fraction of training quasars shipped continuum-normalised.
QSO_NORMALISED = 0.25


#: Coverage range (fraction of the grid) of the VAE's cutout inputs.
VAE_CUTOUT_RANGE = (0.6, 1.0)


@dataclass
class TrainConfig:
    """Sizes and schedules (defaults fit the 30-minute, 2-core budget)."""

    seed: int = 20240601
    latent_dim: int = 32
    kl_weight: float = 0.5
    l1_scale: float = 0.02
    line_scale: float = 0.01
    vae_epochs: int = 24
    vae_pool: int = 6144
    vae_refresh: float = 0.34
    clf_epochs: int = 36
    clf_pool: int = 8192
    clf_refresh: float = 0.34
    batch: int = 128
    lr: float = 2e-3
    heads: int = 4
    clf_channels: tuple = (8, 16, 32, 32, 64, 64)
    galaxy_templates: int = 400
    qso_templates: int = 400
    star_rv_sigma: float = 60.0
    vae_strength: float = 0.7
    vae_min_snr: float = 15.0
    #: lowest S/N per native pixel of classifier samples (log-uniform up to 300)
    clf_min_snr: float = 5.0
    clf_strength: tuple = (0.0, 0.9)
    class_power: float = 0.8
    #: weight of the ordinal (subclass) soft target in the classifier's
    #: cross-entropy (0 = one-hot labels)
    clf_soft: float = 0.0
    #: weight of the classifier's auxiliary log Teff / log g / [Fe/H] head
    clf_aux: float = 0.0
    #: drop training stars whose catalogue class and Teff disagree by more
    #: than one class (:func:`retrspect.models.catalogue.label_consistent`)
    clf_label_rule: bool = False
    #: weight of the VAE's weak supervision: z0, z1, z2 regress standardised
    #: log Teff, log g, [Fe/H] of training stars (0 = none).  Chosen by
    #: ``retrspect train --sweep-vae-supervise`` on validation log g and
    #: self-retrieval (models/benchmarks/vae_supervise_sweep.json); at 30000
    #: a noisy copy of a star no longer finds itself first
    vae_supervise: float = 3000.0
    # The VAE options below (issue 13) default to the run the experiment rule
    # chose on validation stars (models/benchmarks/issue13_experiments.json,
    # run "bank1000_cnce300T01_pnce300"; retrspect.models.cli.EXPERIMENT_RULE);
    # 0 / False turns each off.
    #: the VAE's target keeps its own normalisation instead of the input's,
    #: so the latent need not carry the input's flux scale (which a cutout
    #: or another coverage changes)
    vae_scale_free: bool = True
    #: sigma of a log-normal global scale applied to the VAE's input (0: none)
    vae_input_scale_sigma: float = 0.1
    #: share of VAE inputs cut to a window of 60-100% of the grid, as a
    #: SODA cutout would be (0: only random_observation's own cuts)
    vae_cutout_share: float = 0.3
    #: weight of a consistency term: the latent of the augmented input is
    #: pulled to the latent of the clean observation (its target), so
    #: coverage, noise and calibration do not move it (0: none)
    vae_consistency: float = 300.0
    #: weight of the cross-library term: the latents of one training star's
    #: spectra in two libraries (MILES and STELIB), each observed with its own
    #: augmentation, are pulled together (0: none)
    vae_pair_weight: float = 300.0
    #: pairs per VAE batch for that term
    vae_pair_batch: int = 32
    #: make the cross-library term contrastive (InfoNCE over the batch's
    #: pairs, distances scaled by this temperature): the other stars of the
    #: batch are negatives, so alignment does not blur identity (0: the
    #: pull-only squared distance)
    vae_pair_temperature: float = 1.0
    #: measure the consistency and (pull-only) cross-library distances in the
    #: published latent's units: each dimension divided by its spread over
    #: the batch (floored as :meth:`SpectrumVAE.standardise` floors it).  A
    #: pull in raw units is won by shrinking every latent together, which
    #: search (on the standardised latent) does not see but identity loses;
    #: a ratio has no such shortcut
    vae_align_standardised: bool = False
    #: make the consistency term contrastive (InfoNCE, distances scaled by
    #: this temperature): an augmented input's latent must be nearer its own
    #: clean observation's than the batch's other spectra's, which is search
    #: by example's promise itself (0: the pull-only squared distance)
    vae_consistency_temperature: float = 0.1
    #: weight of an identity term against the whole training archive: the
    #: latent of an augmented training star must be nearer that star's
    #: spectrum as ingest prepares it than every other training star's
    #: (InfoNCE over a bank of their latents, refreshed each epoch, as in
    #: MoCo).  A batch rarely holds a star's near twins; the bank always
    #: does, and twins are what a user's copy must be told from (0: none)
    vae_bank_weight: float = 1000.0
    vae_bank_temperature: float = 1.0
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------
# Sample makers
# --------------------------------------------------------------------------

class Material:
    """Rest-frame training material: train-split stars, synthetic galaxies
    and quasars, Be-like emission stars.  Made once per training run."""

    def __init__(self, items, rng, cfg: TrainConfig, *, split="train"):
        self.rng = rng
        self.cfg = cfg
        self.stars = [i for i in items if i.kind == "star" and i.split == split]
        self.labelled = [i for i in self.stars if i.label and (
            not cfg.clf_label_rule or catalogue.label_consistent(i))]
        ssps = synthetic.ssp_library()
        self.galaxies = [synthetic.synthetic_galaxy(rng, ssps) for _ in range(cfg.galaxy_templates)]
        self.qsos = []
        for _ in range(cfg.qso_templates):
            z = float(rng.uniform(0.1, 4.5))
            self.qsos.append((z, synthetic.synthetic_qso(rng, z, ssps)))
        counts = {}
        for item in self.labelled:
            counts[item.label] = counts.get(item.label, 0) + 1
        self.class_counts = counts
        # Emission-line stars: real ones plus hot/cool stars with Balmer
        # emission added.
        self.emission_hosts = [i for i in self.labelled if i.label in ("O", "B", "A", "F", "M", "K")]
        self.pairs = library_pairs(self.stars)
        #: position of each training star in :attr:`stars` (by object), for
        #: the identity bank
        self.star_index = {id(item): n for n, item in enumerate(self.stars)}

    # -- observations ------------------------------------------------------

    def observed(self, source, obs, native_r=None):
        """(flux, weight) of one observation of a rest-frame (wave, flux, good)."""
        spectrum = observation.observe(*source, obs, self.rng, native_r=native_r)
        return observation.prepare_observed(spectrum)

    def random_source(self, weights):
        """A random rest-frame source: (kind, source tuple, native_r, label, z)."""
        kind = self.rng.choice(len(weights), p=weights)
        rng = self.rng
        if kind == 0:
            item = self.stars[rng.integers(len(self.stars))]
            self.last_item = item
            return "star", (item.wave, item.flux, item.good), \
                item.spectrum.meta["resolving_power"], item.label, None
        self.last_item = None
        if kind == 1:
            g = self.galaxies[rng.integers(len(self.galaxies))]
            z = float(rng.uniform(0.0, 0.3) if rng.random() < 0.8 else rng.uniform(0.3, 0.5))
            return "galaxy", (g.wave, g.flux, g.good), None, "galaxy", z
        z, q = self.qsos[rng.integers(len(self.qsos))]
        return "qso", self.qso_source(q), None, "qso", z

    def qso_source(self, q):
        """A quasar as shipped: as observed, or (a quarter of the time)
        divided by its unabsorbed continuum as echelle pipelines do."""
        if self.rng.random() < QSO_NORMALISED:
            return q.normalised()
        return q.wave, q.flux, q.good


def vae_pair(material: Material, rng, shares=(0.8, 0.12, 0.08)):
    """One VAE sample: (input flux, input weight, target flux, target mask,
    standardised parameters, their mask, index of the star in
    ``material.stars`` or -1) - parameters only for stars.

    The target is the same observation without noise, calibration tilt,
    cuts, gaps or cosmic rays (a denoising, inpainting objective), scaled to
    the input's normalisation over the pixels both cover.
    """
    cfg = material.cfg
    kind, source, native_r, _, z = material.random_source(np.array(shares))
    strength = float(rng.uniform(0.0, cfg.vae_strength))
    if kind == "star":
        v = float(np.clip(rng.normal(0, cfg.star_rv_sigma), -600, 600))
        z = float(observation.velocity_to_z(v))
    obs = observation.random_observation(rng, z=z, strength=strength, native_r=native_r,
                               snr_range=(cfg.vae_min_snr, 300.0))
    if cfg.vae_cutout_share and rng.random() < cfg.vae_cutout_share:
        obs.cut = observation.cutout_window(rng, MODEL_GRID, VAE_CUTOUT_RANGE)
    flux, weight = material.observed(source, obs, native_r)
    clean = observation.Observation(z=obs.z, resolving_power=obs.resolving_power,
                          medium=obs.medium, resample=obs.resample)
    target, target_weight = material.observed(source, clean, native_r)
    both = (weight > 0) & (target_weight > 0)
    if both.sum() > 10 and not cfg.vae_scale_free:
        scale = np.median(target[both]) / max(np.median(flux[both]), 1e-6)
        if np.isfinite(scale) and scale > 0:
            target = target / scale
    if cfg.vae_input_scale_sigma:
        gain = float(np.exp(rng.normal(0.0, cfg.vae_input_scale_sigma)))
        flux, weight = flux * gain, weight / gain ** 2
    params, known = (catalogue.standard_parameters(material.last_item) if kind == "star"
                     else (np.zeros(3, np.float32), np.zeros(3, np.float32)))
    star = material.star_index[id(material.last_item)] if kind == "star" else -1
    return (flux, weight, target.astype(np.float32), (target_weight > 0).astype(np.float32),
            params, known, np.int64(star))


def library_pairs(stars, libraries=("MILES", "STELIB")):
    """(spectrum in one library, the same star's in the other) for every
    star with spectra in both: positives for the cross-library term."""
    by_star = {}
    for item in stars:
        by_star.setdefault(item.star_id, {}).setdefault(item.collection, []).append(item)
    return [(spectra[libraries[0]][0], spectra[libraries[1]][0])
            for _, spectra in sorted(by_star.items())
            if all(library in spectra for library in libraries)]


def pair_sample(material: Material, rng):
    """Both spectra of one library pair, each observed with its own random
    augmentation at one shared radial velocity: (flux_a, weight_a, flux_b,
    weight_b)."""
    cfg = material.cfg
    first, second = material.pairs[rng.integers(len(material.pairs))]
    z = float(observation.velocity_to_z(
        float(np.clip(rng.normal(0, cfg.star_rv_sigma), -600, 600))))
    out = []
    for item in (first, second):
        native_r = item.spectrum.meta["resolving_power"]
        obs = observation.random_observation(
            rng, z=z, strength=float(rng.uniform(0.0, cfg.vae_strength)),
            native_r=native_r, snr_range=(cfg.vae_min_snr, 300.0))
        out.extend(material.observed((item.wave, item.flux, item.good), obs, native_r))
    return tuple(out)


def classifier_sample(material: Material, rng):
    """One classifier sample: (flux, weight, class index, ordinal soft
    target, standardised parameters, their mask)."""
    # class shares: stars by sqrt(count), emission stars, galaxies, QSOs
    cfg = material.cfg
    star_classes = [c for c in catalogue.STAR_CLASSES if material.class_counts.get(c)]
    star_share = np.array([material.class_counts[c] ** cfg.class_power for c in star_classes])
    star_share = 0.72 * star_share / star_share.sum()
    shares = np.concatenate([star_share, [0.1, 0.1, 0.08]])
    choice = rng.choice(len(shares), p=shares / shares.sum())
    strength = float(rng.uniform(*cfg.clf_strength))
    if choice < len(star_classes):
        label = star_classes[choice]
        pool = [i for i in material.labelled if i.label == label]
        item = pool[rng.integers(len(pool))]
        source = (item.wave, item.flux, item.good)
        native_r = item.spectrum.meta["resolving_power"]
        z = float(observation.velocity_to_z(np.clip(rng.normal(0, 80), -600, 600)))
    elif choice == len(star_classes):
        label = "emission_line_star"
        real = [i for i in material.labelled if i.label == label]
        if real and rng.random() < 0.5:
            item = real[rng.integers(len(real))]
            source = (item.wave, item.flux, item.good)
        else:
            host = material.emission_hosts[rng.integers(len(material.emission_hosts))]
            t = synthetic.emission_star(rng, host)
            source = (t.wave, t.flux, t.good)
            item = host
        native_r = item.spectrum.meta["resolving_power"]
        z = float(observation.velocity_to_z(np.clip(rng.normal(0, 80), -600, 600)))
    elif choice == len(star_classes) + 1:
        label = "galaxy"
        g = material.galaxies[rng.integers(len(material.galaxies))]
        source, native_r = (g.wave, g.flux, g.good), None
        z = float(rng.uniform(0.0, 0.3) if rng.random() < 0.8 else rng.uniform(0.3, 0.5))
    else:
        label = "qso"
        z, q = material.qsos[rng.integers(len(material.qsos))]
        source, native_r = material.qso_source(q), None
    obs = observation.random_observation(rng, z=z, strength=strength, native_r=native_r,
                               snr_range=(cfg.clf_min_snr, 300.0))
    flux, weight = material.observed(source, obs, native_r)
    if label in catalogue.STAR_CLASSES:
        soft = catalogue.ordinal_target(item)
    else:
        soft = np.zeros(len(catalogue.CLASSES), np.float32)
        soft[catalogue.CLASS_INDEX[label]] = 1.0
    params, known = (catalogue.standard_parameters(item) if label in catalogue.CLASSES[:8]
                     else (np.zeros(3, np.float32), np.zeros(3, np.float32)))
    return flux, weight, catalogue.CLASS_INDEX[label], soft, params, known


class Pool:
    """A pool of generated samples, part of which is replaced every epoch."""

    def __init__(self, make, size, refresh, rng, desc):
        self.make = make
        self.size = size
        self.refresh = refresh
        self.rng = rng
        self.arrays = None
        self.desc = desc
        self.fill(size)

    def fill(self, n):
        samples = [self.make() for _ in range(n)]
        columns = [np.stack([s[i] for s in samples]) for i in range(len(samples[0]))]
        if self.arrays is None:
            self.arrays = columns
            return
        slots = self.rng.choice(self.size, size=n, replace=False)
        for target, new in zip(self.arrays, columns):
            target[slots] = new

    def epoch(self):
        if self.refresh > 0:
            self.fill(int(self.size * self.refresh))
        return [torch.from_numpy(np.asarray(a)) for a in self.arrays]


def seed_everything(seed):
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _batches(n, batch, generator):
    order = torch.randperm(n, generator=generator)
    for start in range(0, n - batch + 1, batch):
        yield order[start:start + batch]


def _progress(iterable, desc):
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, unit="epoch", dynamic_ncols=True)


def _one_cycle(optimiser, cfg, epochs, size):
    """The learning-rate schedule both trainings use (15% warm-up)."""
    steps = max(1, epochs * (size // cfg.batch))
    return torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=cfg.lr, total_steps=steps,
                                               pct_start=0.15)


def _epoch_tensors(samples, epoch):
    """An epoch's samples as tensors: the pool as filled, then refreshed."""
    return samples.epoch() if epoch else [torch.from_numpy(np.asarray(a)) for a in samples.arrays]


def _step(model, optimiser, schedule, loss):
    """One optimiser step with gradient clipping."""
    optimiser.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    optimiser.step()
    schedule.step()


# --------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------

def high_pass(x, mask):
    """x minus its coverage-weighted running mean (the line pattern)."""
    from retrspect.models.nets import LINE_HALF_WINDOW, box_mean
    return (x - box_mean(x, mask, LINE_HALF_WINDOW)) * mask


def vae_loss(model, flux, weight, target, mask, cfg, generator=None, params=None, known=None):
    """Laplace reconstruction + the same on the line pattern + beta KL.

    ``sum |rec - target| / l1_scale + sum |hp(rec) - hp(target)| /
    line_scale + kl_weight * KL`` over covered target pixels, where hp
    removes a 51-pixel running mean: the second term makes the decoder (and
    so the latent) care about line depths of a few per cent, where gravity
    and metallicity show, not only about the continuum.  With
    ``cfg.vae_supervise`` and parameters given, ``vae_supervise * sum known *
    (mean[:3] - params)^2`` ties z0-z2 to log Teff, log g and [Fe/H]
    (weak supervision after Romaniello et al. 2022), so the latent's L2
    neighbours agree in gravity, which the flux alone weighs weakly.
    """
    mean, logvar = model.encode(flux, weight)
    eps = torch.randn(mean.shape, generator=generator)
    latent = mean + eps * torch.exp(0.5 * logvar)
    rec = model.decode(latent)
    recon = ((rec - target).abs() * mask).sum(1) / cfg.l1_scale
    if cfg.line_scale:
        lines = (high_pass(rec, mask) - high_pass(target, mask)).abs().sum(1)
        recon = recon + lines / cfg.line_scale
    kl = 0.5 * (mean ** 2 + logvar.exp() - 1.0 - logvar).sum(1)
    total = recon + cfg.kl_weight * kl
    if cfg.vae_supervise and params is not None:
        # the first len(params) dimensions (log Teff, log g, [Fe/H] for the
        # generic VAE; a trained space's label columns)
        tied = mean[:, :params.shape[1]]
        total = total + cfg.vae_supervise * ((tied - params) ** 2 * known).sum(1)
    if cfg.vae_consistency:
        clean_mean, _ = model.encode(target, mask)
        spread = batch_spread(clean_mean) if cfg.vae_align_standardised else 1.0
        if cfg.vae_consistency_temperature:
            term = info_nce(mean, clean_mean, cfg.vae_consistency_temperature, spread)
        else:
            term = ((mean - clean_mean) ** 2 / spread).sum(1)
        total = total + cfg.vae_consistency * term
    loss = total.mean()
    pixels = mask.sum(1).clamp_min(1)
    l1 = (((rec - target).abs() * mask).sum(1) / pixels).mean()
    return loss, l1.detach(), kl.mean().detach()


def identity_bank(model, material):
    """Latent means of every training star as ingest prepares it (no
    gradient): the negatives, and each star's positive, of the bank term."""
    pairs = [observation.prepare_observed(i.spectrum) for i in material.stars]
    flux = torch.from_numpy(np.stack([f for f, _ in pairs]))
    weight = torch.from_numpy(np.stack([w for _, w in pairs]))
    with torch.no_grad():
        return torch.cat([model.encode(flux[s:s + 256], weight[s:s + 256])[0]
                          for s in range(0, len(flux), 256)])


def bank_loss(mean, star, bank, temperature):
    """Mean InfoNCE of the batch's star samples against the bank: logits
    ``-squared distance / temperature`` to every training star, the
    sample's own star the right answer."""
    sel = star >= 0
    if not bool(sel.any()):
        return mean.sum() * 0.0
    logits = -torch.cdist(mean[sel], bank) ** 2 / temperature
    return F.cross_entropy(logits, star[sel])


def batch_spread(means, floor=0.05):
    """Per-dimension variance of a batch of latent means plus ``floor``
    squared: the denominator that puts a squared latent distance in the
    published (standardised) latent's units.  Not detached, so it is a
    ratio the encoder cannot lower by shrinking the latent."""
    return means.var(0) + floor ** 2


def pair_loss(model, flux_a, weight_a, flux_b, weight_b, temperature=0.0,
              standardised=False):
    """The cross-library term of a batch of library pairs.

    With ``temperature`` 0: the mean squared distance between the latent
    means of each pair's two spectra (with ``standardised``, in units of the
    batch's spread, :func:`batch_spread`).  Otherwise InfoNCE in both directions
    on logits ``-distance^2 / temperature``: each spectrum must be nearer its
    own star's other spectrum than the batch's other stars.
    """
    mean_a, _ = model.encode(flux_a, weight_a)
    mean_b, _ = model.encode(flux_b, weight_b)
    if not temperature:
        spread = batch_spread(torch.cat([mean_a, mean_b])) if standardised else 1.0
        return ((mean_a - mean_b) ** 2 / spread).sum(1).mean()
    return info_nce(mean_a, mean_b, temperature).mean()


def info_nce(mean_a, mean_b, temperature, spread=1.0):
    """Per-row symmetric InfoNCE: row i of ``mean_a`` and of ``mean_b`` are
    one spectrum (or star); the other rows are the negatives.  Logits are
    ``-squared distance / temperature`` (distances divided by ``spread``)."""
    a = mean_a / spread ** 0.5 if torch.is_tensor(spread) else mean_a
    b = mean_b / spread ** 0.5 if torch.is_tensor(spread) else mean_b
    logits = -torch.cdist(a, b) ** 2 / temperature
    truth = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(logits, truth, reduction="none")
                  + F.cross_entropy(logits.T, truth, reduction="none"))


def train_vae(items, cfg: TrainConfig, *, epochs=None, pool=None, progress=True):
    """Train the VAE on augmented training stars, galaxies and quasars.

    Returns
    -------
    model : SpectrumVAE
    history : list of dict
        Per epoch: loss, L1 per pixel, KL, seconds.
    """
    rng = seed_everything(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    material = Material(items, rng, cfg)
    epochs = cfg.vae_epochs if epochs is None else epochs
    size = cfg.vae_pool if pool is None else pool
    samples = Pool(lambda: vae_pair(material, rng), size, cfg.vae_refresh, rng, "vae")
    pairs = (Pool(lambda: pair_sample(material, rng), max(size // 8, 4 * cfg.vae_pair_batch),
                  cfg.vae_refresh, rng, "vae pairs")
             if cfg.vae_pair_weight and material.pairs else None)
    model = SpectrumVAE(MODEL_GRID.npix, latent_dim=cfg.latent_dim)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    schedule = _one_cycle(optimiser, cfg, epochs, size)
    history = []
    bar = _progress(range(epochs), "train vae") if progress else range(epochs)
    for epoch in bar:
        start = time.perf_counter()
        flux, weight, target, mask, params, known, star = _epoch_tensors(samples, epoch)
        model.eval()
        bank = identity_bank(model, material) if cfg.vae_bank_weight else None
        pair_views = _epoch_tensors(pairs, epoch) if pairs is not None else None
        model.train()
        totals = np.zeros(3)
        n = 0
        for index in _batches(len(flux), cfg.batch, generator):
            loss, l1, kl = vae_loss(model, flux[index], weight[index], target[index],
                                    mask[index], cfg, generator, params[index], known[index])
            if bank is not None:
                mean, _ = model.encode(flux[index], weight[index])
                loss = loss + cfg.vae_bank_weight * bank_loss(
                    mean, star[index], bank, cfg.vae_bank_temperature)
            if pair_views is not None:
                if cfg.vae_pair_temperature:  # distinct pairs: the others are negatives
                    chosen = torch.randperm(len(pair_views[0]),
                                            generator=generator)[:cfg.vae_pair_batch]
                else:
                    chosen = torch.randint(len(pair_views[0]), (cfg.vae_pair_batch,),
                                           generator=generator)
                loss = loss + cfg.vae_pair_weight * pair_loss(
                    model, *(view[chosen] for view in pair_views),
                    temperature=cfg.vae_pair_temperature,
                    standardised=cfg.vae_align_standardised)
            _step(model, optimiser, schedule, loss)
            totals += [loss.item(), l1.item(), kl.item()]
            n += 1
        history.append(epoch_record(epoch, totals, n, start, bar if progress else None))
    model.eval()
    standardise_latent(model, items)
    return model, history


def epoch_record(epoch, totals, n, start, bar=None):
    """One epoch's mean loss, L1 per pixel and KL, and its seconds; shown on
    the progress bar when there is one."""
    row = {"epoch": epoch + 1, "loss": totals[0] / n, "l1": totals[1] / n,
           "kl": totals[2] / n, "seconds": time.perf_counter() - start}
    if bar is not None:
        bar.set_postfix(loss=f"{row['loss']:.1f}", l1=f"{row['l1']:.4f}",
                        kl=f"{row['kl']:.1f}")
    return row


def standardise_latent(model, items):
    """Set the VAE's published-latent standardisation from the training
    stars (train split, as ingest would prepare them; no labels)."""
    train_stars = [i for i in items if i.kind == "star" and i.split == "train"]
    pairs = [observation.prepare_observed(i.spectrum) for i in train_stars]
    flux = np.stack([f for f, _ in pairs])
    weight = np.stack([w for _, w in pairs])
    with torch.inference_mode():
        mean, _ = model.encode(torch.from_numpy(flux), torch.from_numpy(weight))
    model.standardise(mean)


# --------------------------------------------------------------------------
# Classifier
# --------------------------------------------------------------------------

def train_classifier(items, cfg: TrainConfig, *, epochs=None, pool=None, progress=True):
    """Train the classifier (ensemble heads, each on its own bootstrap weights).

    Returns
    -------
    model : SpectrumClassifier
        Temperature still 1; see :func:`fit_temperature`.
    history : list of dict
    """
    rng = seed_everything(cfg.seed + 1)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    material = Material(items, rng, cfg)
    epochs = cfg.clf_epochs if epochs is None else epochs
    size = cfg.clf_pool if pool is None else pool
    samples = Pool(lambda: classifier_sample(material, rng), size, cfg.clf_refresh, rng, "clf")
    model = SpectrumClassifier(MODEL_GRID.npix, n_classes=len(catalogue.CLASSES), heads=cfg.heads,
                               channels=cfg.clf_channels, aux_outputs=3 if cfg.clf_aux else 0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    schedule = _one_cycle(optimiser, cfg, epochs, size)
    history = []
    bar = _progress(range(epochs), "train classifier") if progress else range(epochs)
    for epoch in bar:
        start = time.perf_counter()
        flux, weight, label, soft, params, known = _epoch_tensors(samples, epoch)
        label = label.long()
        model.train()
        total, correct, n = 0.0, 0, 0
        for index in _batches(len(flux), cfg.batch, generator):
            hidden = model.features(flux[index], weight[index])
            logits = model.heads_logits(hidden)                       # (H, B, C)
            # bootstrap: each head sees its own Poisson(1) sample weights
            boot = torch.poisson(torch.ones(logits.shape[:2]), generator=generator)
            heads = logits.shape[0]
            if cfg.clf_soft:
                hard = F.one_hot(label[index], logits.shape[-1]).float()
                target = (1 - cfg.clf_soft) * hard + cfg.clf_soft * soft[index]
                ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                     target.repeat(heads, 1), reduction="none",
                                     label_smoothing=0.02)
            else:
                ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                     label[index].repeat(heads),
                                     reduction="none", label_smoothing=0.02)
            loss = (ce * boot.reshape(-1)).sum() / boot.sum().clamp_min(1)
            if cfg.clf_aux:
                miss = (model.aux(hidden) - params[index]) ** 2 * known[index]
                loss = loss + cfg.clf_aux * miss.sum(1).mean()
            _step(model, optimiser, schedule, loss)
            total += loss.item()
            correct += int((logits.mean(0).argmax(1) == label[index]).sum())
            n += len(index)
        row = {"epoch": epoch + 1, "loss": total / max(1, n // cfg.batch),
               "train_accuracy": correct / max(n, 1),
               "seconds": time.perf_counter() - start}
        history.append(row)
        if progress:
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['train_accuracy']:.3f}")
    model.eval()
    return model, history


def fit_temperature(model, flux, weight, labels):
    """Temperature scaling (Guo et al. 2017) on validation data: the T
    minimising the NLL of the ensemble-mean probabilities, by grid search."""
    with torch.inference_mode():
        logits = model.logits(torch.as_tensor(flux), torch.as_tensor(weight))
    labels = torch.as_tensor(labels).long()
    best = (float("inf"), 1.0)
    for t in np.exp(np.linspace(math.log(0.3), math.log(5.0), 81)):
        p = torch.softmax(logits / float(t), dim=-1).mean(0)
        nll = float(-torch.log(p[torch.arange(len(labels)), labels].clamp_min(1e-12)).mean())
        best = min(best, (nll, float(t)))
    model.temperature.fill_(best[1])
    return best[1], best[0]


def validation_set(items, cfg, rng, n_augmented=3, synthetic=False):
    """Validation data for temperature scaling: val stars as they are and
    augmented; with ``synthetic`` also fresh synthetic galaxies and quasars
    (left out by default: they are easy, and would pull the temperature
    below what real spectra need)."""
    n_synthetic = 60 if synthetic else 1
    material = Material(items, rng, TrainConfig(**{**asdict(cfg),
                                                   "galaxy_templates": n_synthetic,
                                                   "qso_templates": n_synthetic}), split="val")
    flux, weight, labels = [], [], []
    for item in material.labelled:
        f, w = observation.prepare_observed(item.spectrum)
        flux.append(f), weight.append(w), labels.append(catalogue.CLASS_INDEX[item.label])
        for _ in range(n_augmented):
            obs = observation.random_observation(rng, z=float(observation.velocity_to_z(rng.normal(0, 80))),
                                       strength=float(rng.uniform(0.2, 1.0)),
                                       native_r=item.spectrum.meta["resolving_power"])
            f, w = material.observed((item.wave, item.flux, item.good), obs,
                                     item.spectrum.meta["resolving_power"])
            flux.append(f), weight.append(w), labels.append(catalogue.CLASS_INDEX[item.label])
    for kind, pool in ((("galaxy", material.galaxies), ("qso", material.qsos))
                       if synthetic else ()):
        for entry in pool:
            if kind == "galaxy":
                t, z = entry, float(rng.uniform(0, 0.3))
            else:
                z, t = entry
            obs = observation.random_observation(rng, z=z, strength=float(rng.uniform(0.2, 1.0)))
            f, w = material.observed((t.wave, t.flux, t.good), obs)
            flux.append(f), weight.append(w), labels.append(catalogue.CLASS_INDEX[kind])
    return np.array(flux), np.array(weight), np.array(labels)


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------

def save_checkpoint(path, model, *, name, config, history, metrics, extra=None):
    """Save a trained model: state, constructor arguments, history, metrics."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"name": name, "model": model, "config": config,
                "history": history, "metrics": metrics, "extra": extra or {}}, path)
    (path.with_suffix(".json")).write_text(json.dumps(
        {"name": name, "config": config, "history": history, "metrics": metrics,
         "extra": extra or {}}, indent=1, default=float))
    return path


def load_checkpoint(path):
    """Inverse of :func:`save_checkpoint` (the whole module is pickled)."""
    return torch.load(Path(path), weights_only=False)
