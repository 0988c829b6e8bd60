"""Train a latent space on the archive's own spectra (``retrspect train-space``).

Sedaghat et al. trained a VAE, without labels, on the ESO HARPS archive's
own spectra; Skoda & Podsztavek searched LAMOST with a model of the
H-alpha region alone.  This module lets an operator do the same with the
spectra their archive has ingested:

1. :func:`load_archive` reads the chosen collections through the readers,
   from the database's file list (``retrspect.raw_data``), puts each on the
   space's grid in its frame (rest: shifted by the redshift ml_results
   publishes), keeps those that cover the grid, and splits them by object
   (a star's spectra in two libraries share a split; test objects never
   enter training);
2. :func:`train_space` trains a VAE (:class:`models.nets.SpectrumVAE`) on
   augmented training spectra with the generic VAE's losses
   (reconstruction, line pattern, KL, a contrastive consistency term and an
   identity bank), optionally weakly supervised by numeric columns of the
   spectra table; on CUDA when there is one;
3. :func:`evaluate_space` measures it on the test split: reconstruction,
   self-retrieval of a user's noisy copy, and kNN label errors against the
   raw flux on the same grid;
4. :func:`publish` exports it under the latent-space contract
   (``models/CONTRACT.md``) with a card rendered from
   ``cards/templates/space.md``, into the models directory: the next
   ``retrspect import`` embeds every covering spectrum.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from retrspect.ingest.errors import RetrspectError

#: fractions of objects in the test and validation splits
TEST_FRACTION, VAL_FRACTION = 0.1, 0.1
#: the relative noise of a user's copy in the self-retrieval figure
NOISE = 0.02
#: radial-velocity jitter (km/s) of training observations in a rest-frame
#: space: what the velocity model's errors leave after the shift (its card:
#: standard deviation 7.2 km/s, robust sigma 4.6 km/s on stars at S/N 50)
REST_JITTER_KMS = 7.5
#: the space's network (SpaceSpec.encoder), as the card names it
NETWORKS = {"conv": "convolutional variational autoencoder",
            "linear": "linear variational autoencoder (probabilistic PCA)"}
#: the space's network (SpaceSpec.encoder) and what its published latent is
ENCODERS = {
    "conv": "posterior mean of the space's VAE, standardised per dimension",
    "linear": "projection onto the decoder's subspace of the space's linear VAE "
              "(probabilistic PCA, low-noise posterior mean), in an orthonormal "
              "basis: L2 distance = L2 distance of the projected spectra",
}


class SpaceTrainingError(RetrspectError, ValueError):
    """A training request that cannot be done; the message says why."""

    def __init__(self, reason):
        super().__init__("train-space", reason)


@dataclass
class SpaceSpec:
    """What to train: a space's name, data, grid and schedule."""

    name: str
    collections: tuple
    wave_min: float
    wave_max: float
    npix: int
    resolving_power: float | None = None
    frame: str = "observed"
    labels: tuple = ()
    supervise: float = 300.0
    min_coverage: float = 0.9
    latent_dim: int = 16
    #: ``conv``: the generic VAE's convolutional network, latent standardised
    #: per dimension; ``linear``: a linear VAE (probabilistic PCA) started
    #: from the principal components and published decoder-isometric
    #: (:class:`models.nets.LinearSpaceVAE`), for narrow windows where
    #: near-twin stars differ in small-variance directions
    encoder: str = "conv"
    #: the KL term's weight (the generic VAE's is 0.5); lower keeps more of
    #: each spectrum's identity in the latent
    kl_weight: float = 0.5
    #: the identity bank's temperature (the generic VAE's is 1): lower makes
    #: a spectrum's latent nearer its own than its near twins'
    bank_temperature: float = 1.0
    #: velocity jitter of a rest-frame space's training observations (km/s)
    rest_jitter: float = REST_JITTER_KMS
    epochs: int = 30
    pool: int = 4096
    batch: int = 128
    version: str = "1.0.0"
    seed: int = 20261202
    device: str = "auto"
    limit: int | None = None
    #: further TrainConfig settings (``--set name=value``), for experiments
    overrides: dict = field(default_factory=dict)

    @property
    def grid(self):
        from retrspect.ingest.preprocess import Grid
        return Grid.spanning(self.wave_min, self.wave_max, self.npix,
                             resolving_power=self.resolving_power)

    def check(self) -> None:
        """Refuse a spec the contract would refuse, before any work."""
        from retrspect.ingest.contract import FRAMES, NAME_PATTERN, RESERVED_SPACES
        if not NAME_PATTERN.fullmatch(self.name) or self.name in RESERVED_SPACES:
            raise SpaceTrainingError(
                f"space name {self.name!r}: lower-case letters, digits and _, "
                f"starting with a letter, not one of {sorted(RESERVED_SPACES)}")
        if self.frame not in FRAMES:
            raise SpaceTrainingError(f"frame {self.frame!r}: one of {list(FRAMES)}")
        if not (0 < self.wave_min < self.wave_max and self.npix >= 16):
            raise SpaceTrainingError("the grid needs 0 < wave_min < wave_max and "
                                     "at least 16 pixels")
        if not self.collections:
            raise SpaceTrainingError("name at least one collection to learn from")
        if self.encoder not in ENCODERS:
            raise SpaceTrainingError(f"encoder {self.encoder!r}: one of {list(ENCODERS)}")
        if self.encoder == "linear" and self.latent_dim > self.npix:
            raise SpaceTrainingError(f"a linear space has at most npix ({self.npix}) "
                                     "latent dimensions")


@dataclass
class ArchiveSpectrum:
    """One archive spectrum as the space sees it."""

    obs_id: str
    collection: str
    object_id: str
    spectrum: object = field(repr=False)
    redshift: float
    labels: dict
    split: str = "train"
    #: rest-frame (or observed) vacuum wavelength, flux, good pixels
    source: tuple = field(default=None, repr=False)


# --------------------------------------------------------------------------
# The archive's spectra
# --------------------------------------------------------------------------

def numeric_columns(conn, table: str) -> list[str]:
    """Numeric columns of a table (what weak supervision may use)."""
    schema, name = table.split(".")
    return [r[0] for r in conn.query(
        "SELECT column_name FROM information_schema.columns WHERE "
        "table_schema = %(s)s AND table_name = %(t)s AND data_type IN "
        "('real', 'double precision', 'integer', 'smallint', 'bigint', 'numeric')",
        {"s": schema, "t": name})]


def object_id(meta: dict, obs_id: str) -> str:
    """One value per physical object: a star's MILES and STELIB spectra
    agree; MaNGA spaxels of one galaxy share its redshift."""
    from retrspect.models.catalogue import star_identity
    if meta.get("object_class") in ("galaxy", "qso") and meta.get("redshift") is not None:
        return f"{meta['collection']}_z{meta['redshift']:.4f}"
    return star_identity(meta.get("target_name"), obs_id)


def split_of(object_key: str) -> str:
    """test, val or train, from a hash of the object (stable across runs)."""
    u = int(hashlib.sha256(object_key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if u < TEST_FRACTION:
        return "test"
    if u < TEST_FRACTION + VAL_FRACTION:
        return "val"
    return "train"


def load_archive(spec: SpaceSpec, *, progress=True) -> list[ArchiveSpectrum]:
    """The spectra of the chosen collections that cover the space's grid.

    Raises
    ------
    SpaceTrainingError
        An unknown label column, no spectra in the collections, or none
        covering ``min_coverage`` of the grid.
    """
    from gavo import base
    from retrspect.ingest.errors import ReaderError
    from retrspect.ingest.preprocess import grid_coverage, prepare_batch, vacuum_wavelength
    from retrspect.ingest.sources import spectrum_of_row

    spec.check()
    with base.getTableConn() as conn:
        known = numeric_columns(conn, "retrspect.raw_data")
        unknown = [c for c in spec.labels if c not in known]
        if unknown:
            raise SpaceTrainingError(
                f"unknown label column(s) {unknown}: the numeric columns of "
                f"retrspect.raw_data are {sorted(known)}")
        have = {r[0]: r[1] for r in conn.query(
            "SELECT ssa_collection, count(*) FROM retrspect.raw_data GROUP BY 1")}
        missing = [c for c in spec.collections if c not in have]
        if missing:
            raise SpaceTrainingError(
                f"no spectra in collection(s) {missing}; the archive has "
                + ", ".join(f"{c} ({n})" for c, n in sorted(have.items())))
        columns = "".join(f", r.{c}" for c in spec.labels)  # checked names
        rows = list(conn.queryToDicts(
            "SELECT r.obs_id, r.source_file, r.source_index, r.ssa_collection, "
            f"m.redshift{columns} FROM retrspect.raw_data AS r LEFT JOIN "
            "retrspect.ml_results AS m ON m.pubdid = r.ssa_pubdid "
            "WHERE r.ssa_collection = ANY(%(c)s) ORDER BY r.obs_id",
            {"c": list(spec.collections)}))
    if spec.limit:
        rows = rows[:spec.limit]
    inputs = base.getConfig("inputsDir")
    found = []
    iterator = rows
    if progress:
        from tqdm import tqdm
        iterator = tqdm(rows, desc=f"read {spec.name}", unit="spectrum")
    for row in iterator:
        try:
            spectrum = spectrum_of_row(inputs, row["source_file"], row["source_index"],
                                       row["obs_id"])
        except ReaderError as err:
            print(f"skipped {row['obs_id']}: {err}")
            continue
        z = row["redshift"]
        z = float(z) if (spec.frame == "rest" and z is not None) else (
            float("nan") if spec.frame == "rest" else 0.0)
        found.append((row, spectrum, z))
    if not found:
        raise SpaceTrainingError(f"no readable spectra in {list(spec.collections)}")
    flux, weight = prepare_batch([s for _, s, _ in found], spec.grid, [z for *_, z in found])
    coverage = grid_coverage(weight)
    out = []
    for (row, spectrum, z), cov in zip(found, coverage):
        if cov < spec.min_coverage:
            continue
        wave = vacuum_wavelength(spectrum).value / (1.0 + (z if spec.frame == "rest" else 0.0))
        key = object_id(spectrum.meta, row["obs_id"])
        out.append(ArchiveSpectrum(
            row["obs_id"], row["ssa_collection"], key, spectrum, z,
            {c: row[c] for c in spec.labels}, split_of(key),
            (wave, np.asarray(spectrum.flux.value, np.float64), spectrum.good)))
    if not out:
        raise SpaceTrainingError(
            f"none of the {len(found)} spectra of {list(spec.collections)} covers "
            f"{spec.min_coverage:.0%} of {spec.grid.describe()} in the {spec.frame} "
            f"frame (the best covers {float(coverage.max()):.0%})")
    return out


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------

def _config(spec: SpaceSpec):
    """The generic VAE's losses at the space's size (no cross-library pairs:
    an archive need not hold two libraries)."""
    from retrspect.models.train import TrainConfig
    cfg = TrainConfig(seed=spec.seed, latent_dim=spec.latent_dim, vae_epochs=spec.epochs,
                      kl_weight=spec.kl_weight,
                      vae_bank_temperature=spec.bank_temperature,
                      vae_pool=spec.pool, batch=spec.batch,
                      vae_supervise=spec.supervise if spec.labels else 0.0,
                      vae_pair_weight=0.0, vae_cutout_share=0.0)
    for key, value in spec.overrides.items():
        if not hasattr(cfg, key):
            raise SpaceTrainingError(f"--set {key}: not a training setting")
        kind = type(getattr(cfg, key))
        setattr(cfg, key, value.lower() in ("1", "true", "yes") if kind is bool
                else kind(value))
    return cfg


def label_targets(items, labels):
    """Standardised label values of each spectrum and their mask (a
    missing or non-finite value is masked), with the train split's mean
    and spread."""
    values = np.array([[np.nan if it.labels[c] is None else float(it.labels[c])
                        for c in labels] for it in items], dtype=np.float64).reshape(len(items), -1)
    known = np.isfinite(values)
    train = np.array([it.split == "train" for it in items])
    mean = np.array([np.nanmean(values[train & known[:, j], j]) if (train & known[:, j]).any()
                     else 0.0 for j in range(values.shape[1])])
    std = np.array([np.nanstd(values[train & known[:, j], j]) if (train & known[:, j]).sum() > 1
                    else 1.0 for j in range(values.shape[1])])
    std = np.where(std > 0, std, 1.0)
    standard = np.where(known, (values - mean) / std, 0.0)
    return standard.astype(np.float32), known.astype(np.float32)


def make_sample(items, index, spec, cfg, rng, params, known):
    """One augmented training sample of a training spectrum: (input flux,
    input weight, clean target, its mask, label targets, their mask, index
    of the spectrum for the identity bank)."""
    from retrspect.models import observation
    item = items[index]
    native_r = item.spectrum.meta.get("resolving_power")
    v = rng.normal(0.0, spec.rest_jitter if spec.frame == "rest" else cfg.star_rv_sigma)
    obs = observation.random_observation(
        rng, z=float(observation.velocity_to_z(v)),
        strength=float(rng.uniform(0.0, cfg.vae_strength)), native_r=native_r,
        snr_range=(cfg.vae_min_snr, 300.0))
    spectrum = observation.observe(*item.source, obs, rng, native_r=native_r)
    flux, weight = observation.prepare_observed(spectrum, spec.grid)
    clean = observation.Observation(z=obs.z, resolving_power=obs.resolving_power,
                                    medium=obs.medium, resample=obs.resample)
    target, target_weight = observation.prepare_observed(
        observation.observe(*item.source, clean, rng, native_r=native_r), spec.grid)
    return (flux, weight, target.astype(np.float32), (target_weight > 0).astype(np.float32),
            params[index], known[index], np.int64(index))


def prepared(items, spec):
    """flux, weight of spectra as ingest prepares them for this space."""
    from retrspect.ingest.preprocess import prepare_batch
    return prepare_batch([i.spectrum for i in items], spec.grid,
                         [i.redshift if spec.frame == "rest" else 0.0 for i in items])


def choose_device(wanted: str):
    """CUDA when asked for or available (``auto``), else the CPU."""
    import torch
    if wanted == "cpu" or (wanted == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SpaceTrainingError("--device cuda, but torch sees no CUDA device")
    return torch.device("cuda")


def train_space(items, spec: SpaceSpec, *, progress=True):
    """Train the space's VAE on the training split.

    Returns
    -------
    model : SpectrumVAE or LinearSpaceVAE (on the CPU, eval mode, latent
        standardised or isometric, see ``SpaceSpec.encoder``)
    history : list of dict per epoch (loss, l1, kl, seconds)
    device : str
    """
    import torch
    from retrspect.models import train as T
    from retrspect.models.nets import LinearSpaceVAE, SpectrumVAE

    cfg = _config(spec)
    rng = T.seed_everything(spec.seed)
    device = choose_device(spec.device)
    generator = torch.Generator().manual_seed(spec.seed)
    train_rows = [n for n, it in enumerate(items) if it.split == "train"]
    if len(train_rows) < 8:
        raise SpaceTrainingError(f"only {len(train_rows)} training spectra cover the "
                                 "grid; at least 8 are needed")
    params, known = label_targets(items, spec.labels)
    samples = T.Pool(lambda: make_sample(items, train_rows[rng.integers(len(train_rows))],
                                         spec, cfg, rng, params, known),
                     spec.pool, cfg.vae_refresh, rng, spec.name)
    bank_flux, bank_weight = prepared([items[n] for n in train_rows], spec)
    bank_position = np.full(len(items), -1, np.int64)
    bank_position[train_rows] = np.arange(len(train_rows))
    if spec.encoder == "linear":
        model = LinearSpaceVAE(spec.npix, latent_dim=spec.latent_dim)
        model.start_from_pca(torch.as_tensor(bank_flux), torch.as_tensor(bank_weight))
        model = model.to(device)
    else:
        model = SpectrumVAE(spec.npix, latent_dim=spec.latent_dim).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    schedule = T._one_cycle(optimiser, cfg, spec.epochs, spec.pool)
    history = []
    epochs = range(spec.epochs)
    bar = T._progress(epochs, f"train {spec.name} ({device.type})") if progress else epochs
    for epoch in bar:
        start = time.perf_counter()
        flux, weight, target, mask, p, k, index = (
            t.to(device) for t in T._epoch_tensors(samples, epoch))
        star = torch.as_tensor(bank_position, device=device)[index]
        bank = None
        if cfg.vae_bank_weight:
            model.eval()
            with torch.no_grad():
                bank = torch.cat([
                    model.encode(torch.as_tensor(bank_flux[s:s + 512], device=device),
                                 torch.as_tensor(bank_weight[s:s + 512], device=device))[0]
                    for s in range(0, len(bank_flux), 512)])
        model.train()
        totals, n = np.zeros(3), 0
        for batch in T._batches(len(flux), spec.batch, generator):
            batch = batch.to(device)
            loss, l1, kl = T.vae_loss(model, flux[batch], weight[batch], target[batch],
                                      mask[batch], cfg,
                                      generator if device.type == "cpu" else None,
                                      p[batch] if spec.labels else None, k[batch])
            if bank is not None:
                mean, _ = model.encode(flux[batch], weight[batch])
                loss = loss + cfg.vae_bank_weight * T.bank_loss(
                    mean, star[batch], bank, cfg.vae_bank_temperature)
            T._step(model, optimiser, schedule, loss)
            totals += [loss.item(), l1.item(), kl.item()]
            n += 1
        history.append(T.epoch_record(epoch, totals, n, start, bar if progress else None))
    model = model.cpu().eval()
    if spec.encoder == "linear":
        model.isometrise(torch.as_tensor(bank_flux), torch.as_tensor(bank_weight))
    else:
        with torch.inference_mode():
            mean, _ = model.encode(torch.as_tensor(bank_flux), torch.as_tensor(bank_weight))
        model.standardise(mean)
    return model, history, device.type


# --------------------------------------------------------------------------
# Figures on the test split
# --------------------------------------------------------------------------

def _latents(model, flux, weight):
    from retrspect.models.evaluate import run
    return run(model, flux, weight)[0].astype(np.float64)


def _user_copy_inputs(items, spec, rng, noise):
    """A user's copy of each spectrum (resampled, noisier, no errors; see
    :func:`models.evaluate.user_copy`) as ingest prepares it for the space,
    at the spectrum's own published redshift."""
    from retrspect.ingest.preprocess import prepare_batch
    from retrspect.models.evaluate import user_copy
    copies = [user_copy(i.spectrum, rng, noise=noise) for i in items]
    return prepare_batch(copies, spec.grid,
                         [i.redshift if spec.frame == "rest" else 0.0 for i in items])


def rank_of_own(queries, index, own_rows):
    """Rank of each query's own row among the index (ties count against)."""
    if len(queries) == 0:
        return np.zeros(0, dtype=np.intp)
    d = ((queries[:, None, :] - index[None, :, :]) ** 2).sum(-1)
    own = d[np.arange(len(queries)), np.asarray(own_rows, dtype=np.intp)]
    return (d <= own[:, None]).sum(1)


def evaluate_space(model, items, spec, *, seed=7):
    """The card's figures, on the test split (the index is every spectrum
    the space embeds, as ingest would)."""
    from retrspect.models.evaluate import knn_predict, run
    rng = np.random.default_rng(seed)
    flux, weight = prepared(items, spec)
    latents = _latents(model, flux, weight)
    test = [n for n, it in enumerate(items) if it.split == "test"]
    out = {"n_spectra": len(items),
           "n_split": {s: sum(it.split == s for it in items) for s in ("train", "val", "test")},
           "n_objects": len({it.object_id for it in items}),
           "collections": {c: sum(it.collection == c for it in items)
                           for c in sorted({it.collection for it in items})}}
    if not test:
        return out
    rec = run(model, flux[test], weight[test])[2]
    covered = weight[test] > 0
    out["reconstruction_l1"] = float(np.abs(rec - flux[test])[covered].mean())
    q_flux, q_weight = _user_copy_inputs([items[n] for n in test], spec, rng, NOISE)
    ranks = rank_of_own(_latents(model, q_flux, q_weight), latents, np.array(test))
    out["self_retrieval"] = {"noise": NOISE, "first": float(np.mean(ranks == 1)),
                             "top5": float(np.mean(ranks <= 5)), "n": len(test),
                             "se": float(math.sqrt(np.mean(ranks == 1) * (1 - np.mean(ranks == 1))
                                                   / len(test)))}
    # the same search on the prepared flux itself: what the latent adds
    flat_ranks = rank_of_own(q_flux.astype(np.float64), flux.astype(np.float64), np.array(test))
    out["self_retrieval_flux"] = float(np.mean(flat_ranks == 1))
    train = [n for n, it in enumerate(items) if it.split == "train"]
    knn = {}
    for label in spec.labels:
        values = np.array([np.nan if it.labels[label] is None else float(it.labels[label])
                           for it in items])
        index = [n for n in train if np.isfinite(values[n])]
        queries = [n for n in test if np.isfinite(values[n])]
        if len(index) < 5 or not queries:
            continue
        truth = values[queries]
        by_latent = knn_predict(latents[index], values[index, None], latents[queries])[:, 0]
        by_flux = knn_predict(flux[index], values[index, None], flux[queries])[:, 0]
        knn[label] = {"n": len(queries),
                      "latent_median_abs_error": float(np.median(np.abs(by_latent - truth))),
                      "flux_median_abs_error": float(np.median(np.abs(by_flux - truth)))}
    out["knn"] = knn
    return out


# --------------------------------------------------------------------------
# Export under the contract, with its card
# --------------------------------------------------------------------------

def publish(model, spec: SpaceSpec, figures: dict, history, device: str, directory,
            *, seconds: float) -> Path:
    """Write ``<name>-<hash>.onnx`` and ``cards/<name>.md`` into the models
    directory; the file is loaded back through the contract first.  The
    file's metrics hold the spec and the training figures, so the card can
    be rendered again from the file alone (:func:`card_of`)."""
    import onnx
    from retrspect.ingest.contract import PREFIX, file_name
    from retrspect.ingest.infer import load_model
    from retrspect.ingest.preprocess import NORMALISATION
    from retrspect.models.export import OPSET, onnx_bytes, source_commit

    figures = {**figures, "spec": spec_record(spec),
               "training": {"seconds": round(seconds, 1), "device": device,
                            "epochs": len(history),
                            "final_loss": history[-1]["loss"] if history else None}}
    directory = Path(directory)
    proto = onnx.load_from_string(onnx_bytes(model, spec.npix, "vae"))
    training = (f"{figures['n_split']['train']} training spectra of this archive "
                f"({', '.join(spec.collections)}) covering {spec.min_coverage:.0%} of "
                f"{spec.grid.describe()} ({spec.frame} frame); split by object")
    props = {
        "model": "space", "space": spec.name, "version": spec.version,
        "grid": spec.grid.to_json(), "frame": spec.frame, "medium": "vacuum",
        "min_coverage": str(spec.min_coverage), "latent_dim": str(spec.latent_dim),
        "metric": "l2", "normalisation": NORMALISATION, "opset": str(OPSET),
        "training_data": training, "source_commit": source_commit(),
        "metrics": json.dumps(figures, sort_keys=True, default=float),
        "outputs": json.dumps({
            "latent_mean": {"role": "latent", "metric": "l2",
                            "description": ENCODERS[spec.encoder]},
            "anomaly": {"role": "scalar", "unit": "", "ucd": "stat.fit.chi2",
                        "description": "noise-weighted mean squared residual of "
                                       "the reconstruction over covered pixels"}}),
    }
    del proto.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = PREFIX + key, value
    data = proto.SerializeToString()
    path = directory / file_name(spec.name, data)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob(f"{spec.name}-*.onnx"):
        if old != path:
            old.unlink()
    path.write_bytes(data)
    try:
        load_model(path, threads=1)
    except RetrspectError:
        path.unlink()
        raise
    (directory / "cards").mkdir(exist_ok=True)
    (directory / "cards" / f"{spec.name}.md").write_text(card_of(path), encoding="utf-8")
    from retrspect.models.export import export_decoder
    export_decoder(path)                      # decoders/<name>-<hash>.onnx
    return path


def card_of(path) -> str:
    """A trained space's card, from ``cards/templates/space.md`` and what
    its file holds."""
    import string
    from retrspect.ingest.infer import read_description
    from retrspect.models.cards import TEMPLATE_DIR

    description = read_description(path)
    figures = description.info["metrics"]
    spec, training = figures["spec"], figures["training"]
    sr = figures.get("self_retrieval", {})
    nan = float("nan")
    knn_rows = "\n".join(
        f"| {label} | {row['n']} | {row['latent_median_abs_error']:.3g} | "
        f"{row['flux_median_abs_error']:.3g} |"
        for label, row in figures.get("knn", {}).items()) or "| (no labels) | | | |"
    context = {
        "name": spec["name"], "file_name": Path(path).name, "version": spec["version"],
        "wave_min": f"{spec['wave_min']:.0f}", "wave_max": f"{spec['wave_max']:.0f}",
        "npix": spec["npix"], "frame": spec["frame"],
        "resolving_power": (f"{spec['resolving_power']:.0f}" if spec["resolving_power"]
                            else "as observed"),
        "min_coverage": f"{spec['min_coverage']:.0%}", "latent_dim": spec["latent_dim"],
        "collections": ", ".join(f"{c} ({n})" for c, n in figures["collections"].items()),
        "n_spectra": figures["n_spectra"], "n_objects": figures["n_objects"],
        "n_train": figures["n_split"]["train"], "n_val": figures["n_split"]["val"],
        "n_test": figures["n_split"]["test"],
        "labels": ", ".join(spec["labels"]) or "none",
        "settings": settings_line(spec),
        "network": NETWORKS[spec.get("encoder", "conv")],
        "latent_meaning": ENCODERS[spec.get("encoder", "conv")],
        "epochs": training["epochs"], "pool": spec["pool"], "device": training["device"],
        "minutes": f"{training['seconds'] / 60:.1f}",
        "final_loss": (f"{training['final_loss']:.1f}" if training["final_loss"] is not None
                       else "n/a"),
        "reconstruction_l1": f"{figures.get('reconstruction_l1', nan):.4f}",
        "noise_pct": f"{sr.get('noise', NOISE):.0%}",
        "self_first": f"{sr.get('first', nan):.3f}",
        "self_se": f"{sr.get('se', nan):.3f}",
        "self_top5": f"{sr.get('top5', nan):.3f}",
        "self_flux": f"{figures.get('self_retrieval_flux', nan):.3f}",
        "knn_rows": knn_rows,
        "against_generic": against_generic_block(spec["name"], figures.get("against_generic")),
        "source_commit": description.metadata.get("source_commit", "unknown")[:12],
    }
    template = (Path(TEMPLATE_DIR) / "space.md").read_text(encoding="utf-8")
    return string.Template(template).substitute(context)


def settings_line(spec: dict) -> str:
    """The settings that differ from the defaults, as given on the command line."""
    defaults = spec_record(SpaceSpec("x", (), 1.0, 2.0, 16))
    shown = {k: v for k, v in spec.items()
             if k in ("encoder", "latent_dim", "kl_weight", "bank_temperature", "supervise",
                      "rest_jitter", "seed")
             and v != defaults[k]}
    shown.update(spec.get("overrides", {}))
    return ", ".join(f"{k} = {v}" for k, v in sorted(shown.items())) or "the defaults"


def against_generic_block(name, report) -> str:
    """The card's comparison with generic (:func:`compare_with_generic`)."""
    if not report:
        return "Not compared with generic (run with --compare-generic)."
    cross, knn, em = report["cross_library"], report["knn"], report["emission_precision"]
    rows = [f"On the {report['n_spectra']} spectra both spaces embed:", "",
            f"| figure | {name} | generic |", "|---|---|---|"]
    for key in ("miles_to_stelib_hit@1", "miles_to_stelib_hit@10",
                "stelib_to_miles_hit@1", "stelib_to_miles_hit@10"):
        a, b = cross[name][key], cross["generic"][key]
        rows.append(f"| same star across libraries, {key.replace('_', ' ')} "
                    f"({cross['n_pairs']} test pairs) | {a['hit']:.2f} +- {a['se']:.2f} | "
                    f"{b['hit']:.2f} +- {b['se']:.2f} |")
    rows.append(f"| kNN log Teff, median error in per cent ({knn['teff_percent']['n']} test "
                f"stars) | {knn['teff_percent'][name]:.2f} | {knn['teff_percent']['generic']:.2f} |")
    rows.append(f"| kNN log g, median error in dex ({knn['logg_dex']['n']} test stars) | "
                f"{knn['logg_dex'][name]:.3f} | {knn['logg_dex']['generic']:.3f} |")
    ci = {k: em[k]["ci95"] for k in (name, "generic")}
    rows.append(f"| emission-line precision@{em['k']}, leave-one-out over {em['n_labelled']} "
                f"labelled spectra (95% bootstrap interval) | {em[name]['mean']:.2f} "
                f"({ci[name][0]:.2f}-{ci[name][1]:.2f}) | {em['generic']['mean']:.2f} "
                f"({ci['generic'][0]:.2f}-{ci['generic'][1]:.2f}) |")
    rows += ["", f"Emission-line labels: {em['label_source']}; a window on H-alpha is "
                 f"favoured by them by construction. Chance: {em['chance']:.3f}."]
    return "\n".join(rows)


def spec_record(spec: SpaceSpec) -> dict:
    """The spec as JSON (kept in the card's figures file)."""
    return asdict(spec)


# --------------------------------------------------------------------------
# A window space against generic, on labels it cannot have learned
# --------------------------------------------------------------------------

def _onnx_latents(path, flux, weight):
    from retrspect.ingest.infer import load_model
    model = load_model(path, threads=2)
    return model.run(flux, weight)[model.latent_output].astype(np.float64)


def _ranks(queries, index, own):
    return rank_of_own(queries, index, np.asarray(own, dtype=np.intp))


def _rate(ranks, k):
    p = float(np.mean(np.asarray(ranks) <= k)) if len(ranks) else float("nan")
    return {"hit": p, "se": math.sqrt(p * (1 - p) / len(ranks)) if len(ranks) else float("nan")}


def _bootstrap(values, rng, n=2000, level=0.95):
    values = np.asarray(values, dtype=np.float64)
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(1)
    tail = (1 - level) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))]


def compare_with_generic(items, spec, space_path, generic_path, *, k=10, seed=11):
    """A space's figures beside generic's on the same spectra (those both
    embed): same-star retrieval across MILES and STELIB (test split),
    kNN log Teff and log g against the catalogues (test stars from train
    stars, k = 5), and emission-line precision@k, leave-one-out over every
    labelled emission-line spectrum, with a bootstrap interval.  The
    emission labels come from :func:`models.catalogue.label_item`: an MK
    type with W, or net H-alpha emission above
    :data:`models.catalogue.EMISSION_EW` measured on the spectrum itself."""
    from retrspect.ingest.preprocess import MIN_GRID_COVERAGE, MODEL_GRID, grid_coverage, prepare_batch
    from retrspect.models.catalogue import label_item
    from retrspect.models.evaluate import knn_predict

    rng = np.random.default_rng(seed)
    g_flux, g_weight = prepare_batch([i.spectrum for i in items], MODEL_GRID)
    both = grid_coverage(g_weight) >= MIN_GRID_COVERAGE
    items = [i for i, b in zip(items, both) if b]
    s_flux, s_weight = prepared(items, spec)
    vectors = {spec.name: _onnx_latents(space_path, s_flux, s_weight),
               "generic": _onnx_latents(generic_path, g_flux[both], g_weight[both])}
    labels = [label_item(i.spectrum) for i in items]
    out = {"n_spectra": len(items)}

    by_object = {}
    for n, item in enumerate(items):
        if item.split == "test":
            by_object.setdefault(item.object_id, {}).setdefault(item.collection, n)
    pairs = [(c["MILES"], c["STELIB"]) for c in by_object.values()
             if "MILES" in c and "STELIB" in c]
    miles = [n for n, i in enumerate(items) if i.collection == "MILES"]
    stelib = [n for n, i in enumerate(items) if i.collection == "STELIB"]
    cross = {"n_pairs": len(pairs)}
    for name, z in vectors.items():
        first = np.array([a for a, _ in pairs], dtype=np.intp)
        second = np.array([b for _, b in pairs], dtype=np.intp)
        m2s = _ranks(z[first], z[stelib], [stelib.index(b) for b in second])
        s2m = _ranks(z[second], z[miles], [miles.index(a) for a in first])
        cross[name] = {f"{d}_hit@{h}": _rate(r, h) for d, r in (("miles_to_stelib", m2s),
                                                                ("stelib_to_miles", s2m))
                       for h in (1, 10)}
    out["cross_library"] = cross

    knn = {}
    for field_name, transform in (("teff", math.log10), ("logg", float)):
        values = np.array([transform(l.teff) if field_name == "teff" and l.teff else
                           (l.logg if field_name == "logg" and l.logg is not None else np.nan)
                           for l in labels], dtype=np.float64)
        index = [n for n, i in enumerate(items) if i.split == "train" and np.isfinite(values[n])]
        queries = [n for n, i in enumerate(items) if i.split == "test" and np.isfinite(values[n])]
        row = {"n": len(queries)}
        for name, z in vectors.items():
            predicted = knn_predict(z[index], values[index, None], z[queries])[:, 0]
            error = np.abs(predicted - values[queries])
            row[name] = float(np.median(error) * (math.log(10) * 100 if field_name == "teff" else 1))
        knn["teff_percent" if field_name == "teff" else "logg_dex"] = row
    out["knn"] = knn

    emission = np.array([l.label == "emission_line_star" for l in labels])
    queries = np.flatnonzero(emission)
    precision = {"n_labelled": int(emission.sum()), "k": k,
                 "label_source": "MK type with W, or net H-alpha emission equivalent "
                                 "width above the catalogue threshold, measured on the "
                                 "spectra themselves"}
    for name, z in vectors.items():
        d = ((z[queries][:, None, :] - z[None, :, :]) ** 2).sum(-1)
        d[np.arange(len(queries)), queries] = np.inf          # leave one out
        nearest = np.argsort(d, axis=1)[:, :k]
        hits = emission[nearest].mean(1)
        precision[name] = {"mean": float(hits.mean()), "ci95": _bootstrap(hits, rng)}
    precision["chance"] = float(emission.mean())
    out["emission_precision"] = precision
    return out
