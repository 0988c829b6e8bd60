"""The ingest engine: read, preprocess and infer in batches, in parallel.

Work is cut into chunks of source files.  A worker (a local process, or a
Dask worker for archives beyond one machine) reads a chunk, preprocesses
every spectrum once per model grid, runs every model on the chunk as one
batch and returns finished rows; the importing process only hands rows to
DaCHS, which writes them.  At most a few chunks are in flight, so memory
stays flat in the number of spectra.

Nothing here imports DaCHS or torch: workers need neither.
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from retrspect.ingest.errors import ReaderError
from retrspect.ingest.contract import class_is_known
from retrspect.ingest.infer import default_threads, model_dir_from_environment
from retrspect.ingest.preprocess import C_KMS, MIN_GRID_COVERAGE
from retrspect.ingest.rows import raw_row
from retrspect.ingest.sources import read_source

#: stages timed per chunk
STAGES = ("read", "preprocess", "infer", "rows")


@dataclass
class IngestOptions:
    """How to run an ingest; every field has an environment default so the
    DaCHS grammar (which gets no arguments) can be steered by the CLI."""

    model_dir: Path | None = None
    use_models: bool = True
    workers: int = 0               # 0: one per core
    chunk_files: int = 64
    batch_size: int = 256
    dask: str | None = None        # scheduler address, or "local"
    latent_dim: int | None = None  # the table's vector(n); checked at load
    latent_metric: str | None = None  # what the table's HNSW index is for
    only: str | None = None        # one table's models: "generic" or a space
    progress: bool = True

    @classmethod
    def from_environment(cls, **overrides) -> "IngestOptions":
        env = os.environ
        options = cls(
            # resolved here, so Dask workers elsewhere load the same models
            model_dir=model_dir_from_environment(),
            use_models=env.get("RETRSPECT_NO_MODELS", "") == "",
            workers=int(env.get("RETRSPECT_WORKERS", "0")),
            chunk_files=int(env.get("RETRSPECT_CHUNK_FILES", "64")),
            dask=env.get("RETRSPECT_DASK") or None,
        )
        for key, value in overrides.items():
            setattr(options, key, value)
        return options


@dataclass
class ChunkResult:
    """What a worker returns for one chunk of files."""

    rows: list[dict]
    skipped: list[tuple[str, str]]            # (source_file, reason)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class IngestSummary:
    """Counts and time per stage, for the report at the end of an ingest."""

    files: int = 0
    spectra: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: Counter = field(default_factory=Counter)
    wall: float = 0.0

    def add(self, result: ChunkResult, files: int) -> None:
        self.files += files
        self.spectra += len(result.rows)
        self.skipped.extend(result.skipped)
        self.seconds.update(result.seconds)

    def report(self) -> str:
        rate = self.spectra / self.wall if self.wall else 0.0
        lines = [f"ingested {self.spectra} spectra from "
                 f"{self.files - len(self.skipped)} files in "
                 f"{self.wall:.1f} s ({rate:.0f} spectra/s); "
                 f"skipped {len(self.skipped)} files"]
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        stages = ", ".join(f"{stage} {self.seconds[stage]:.1f} s"
                           for stage in (*STAGES, "db_write"))
        lines.append(f"  time per stage (summed over workers): {stages}")
        return "\n".join(lines)


# ------------------------------------------------------------- workers ----

def _models_for(options: IngestOptions):
    """The worker's models, loaded once per process (None: no models)."""
    if not options.use_models:
        return None
    from retrspect.ingest.infer import models_for_table
    return models_for_table(options.latent_dim, options.latent_metric,
                            options.model_dir,
                            1 if options.workers != 1 else None
                            ).select(options.only)


def _value(x) -> float | None:
    """A model output as a column value: NULL where the model had no answer.

    The models answer NaN where a spectrum covers too little of their grid;
    SQL aggregates and ADQL comparisons treat NULL, not NaN, as "unknown".
    """
    x = float(x)
    return x if np.isfinite(x) else None


def ml_columns(models, outputs: dict, i: int) -> dict:
    """The ``ml_results`` columns of the i-th spectrum of a batch.

    A model whose grid the spectrum covers less than its ``min_coverage``
    (:data:`ingest.preprocess.MIN_GRID_COVERAGE`) of gives no answer: its
    output columns are NULL (no latent, so no neighbours made of padding),
    and its model column still names it, so re-embedding knows the spectrum
    was seen.  A spectrum outside the models' domain
    (:func:`ingest.contract.class_is_known`) keeps its class probabilities
    but gets no class.
    """
    def answered(kind: str) -> bool:
        return outputs[kind]["grid_coverage"][i] >= models.models[kind].min_coverage

    row = {}
    if "vae" in outputs:
        vae, out = models.models["vae"], outputs["vae"]
        row.update(latent_model=vae.model_id,
                   grid_coverage=float(out["grid_coverage"][i]),
                   latent=None, latent_sigma=None, anomaly=None)
        if answered("vae"):
            row.update(
                latent=[float(v) for v in out["latent_mean"][i]],
                latent_sigma=[float(v)
                              for v in np.exp(0.5 * out["latent_logvar"][i])],
                anomaly=_value(out["anomaly"][i]))
    if "classifier" in outputs:
        classifier, out = models.models["classifier"], outputs["classifier"]
        row.update(class_model=classifier.model_id, ml_class=None,
                   class_probability=None, class_uncertainty=None,
                   **{f"p_{label.lower()}": None
                      for label in classifier.labels})
        if answered("classifier"):
            probabilities = out["probabilities"][i]
            row.update(
                class_uncertainty=float(out["uncertainty"][i]),
                **{f"p_{label.lower()}": float(p)
                   for label, p in zip(classifier.labels, probabilities)})
            if class_is_known(
                    float(out["grid_coverage"][i]),
                    _value(outputs["vae"]["anomaly"][i]) if "vae" in outputs else None,
                    min_class_coverage=classifier.min_class_coverage,
                    anomaly_ceiling=(models.models["vae"].anomaly_ceiling
                                     if "vae" in outputs else None)):
                best = int(np.argmax(probabilities))
                row.update(ml_class=classifier.labels[best],
                           class_probability=float(probabilities[best]))
    if "velocity" in outputs:
        velocity, out = models.models["velocity"], outputs["velocity"]
        z = z_err = None
        if answered("velocity"):
            z = _value(out["redshift"][i])
            z_err = _value(out["redshift_error"][i])
        row.update(redshift=z, redshift_err=z_err,
                   velocity=None if z is None else C_KMS * z,
                   velocity_err=None if z_err is None else C_KMS * z_err,
                   velocity_model=velocity.model_id)
    return row


def space_columns(models, outputs: dict, i: int) -> dict:
    """The columns of the i-th spectrum of a batch in each plug-in space's
    table, as ``<space>__<column>`` (the RD's generated rowmakers take
    them apart).

    Every spectrum a space's model saw gets a row naming the model and the
    grid coverage; a spectrum covering less than the model's
    ``min_coverage`` has NULL outputs there, and the space's TAP table (a
    view of the covered rows) does not show it.
    """
    row = {}
    for name, model in models.spaces.items():
        if name not in outputs:
            continue
        out, prefix = outputs[name], f"{name}__"
        coverage = float(out["grid_coverage"][i])
        covered = coverage >= model.min_coverage
        row[prefix + "model"] = model.model_id
        row[prefix + "grid_coverage"] = coverage
        for spec in model.output_specs:
            values = out[spec.name][i]
            if spec.role == "latent":
                row[prefix + "latent"] = ([float(v) for v in values]
                                          if covered else None)
            elif spec.role == "probabilities":
                row.update({prefix + column: _value(v) if covered else None
                            for column, v in zip(spec.columns, values)})
            else:
                row[prefix + spec.name] = _value(values) if covered else None
    return row


def infer_batch(spectra, models, batch_size: int = 256,
                seconds: Counter | None = None) -> dict:
    """Every model's outputs for a list of spectra: key -> name -> array.

    Each spectrum is put on each distinct model grid once (the same
    :func:`ingest.preprocess.prepare_batch` training uses), then the models
    run in batches.  Spaces that read spectra in their rest frame run
    after the velocity model, on spectra shifted by the redshift it
    measured (no redshift: no coverage).  Besides its own outputs each
    model gets ``grid_coverage``, the fraction of its grid each spectrum
    covers.  Ingest and search by example both come through here.
    """
    seconds = seconds if seconds is not None else Counter()
    if models is None or not models.models or not spectra:
        return {}
    observed = [key for key, m in models.models.items() if m.frame != "rest"]
    rest = [key for key, m in models.models.items() if m.frame == "rest"]
    outputs = _run_models(spectra, models, observed, None, batch_size, seconds)
    if rest:
        z = published_redshift(models, outputs, len(spectra))
        outputs.update(_run_models(spectra, models, rest, z, batch_size, seconds))
    return outputs


def published_redshift(models, outputs: dict, n: int) -> np.ndarray:
    """The redshift ml_results publishes for each of ``n`` spectra, NaN
    where it publishes NULL (too little of the velocity model's grid
    covered, or no answer): what rest-frame spaces shift by."""
    if "velocity" not in outputs:
        return np.full(n, np.nan)
    out = outputs["velocity"]
    answered = out["grid_coverage"] >= models.models["velocity"].min_coverage
    return np.where(answered, out["redshift"], np.nan)


def _run_models(spectra, models, keys, redshifts, batch_size, seconds) -> dict:
    """Outputs of the models ``keys`` (all of one frame): prepare each
    distinct grid once, run in batches, add ``grid_coverage``."""
    from retrspect.ingest import preprocess

    start = time.perf_counter()
    prepared = {}
    for key in keys:
        model = models.models[key]
        if model.preparation not in prepared:
            prepared[model.preparation] = preprocess.prepare_batch(
                spectra, model.grid, redshifts)
    seconds["preprocess"] += time.perf_counter() - start
    start = time.perf_counter()
    outputs: dict[str, dict[str, list]] = {}
    for first in range(0, len(spectra), batch_size):
        part = {key: (flux[first:first + batch_size],
                      weight[first:first + batch_size])
                for key, (flux, weight) in prepared.items()}
        for key, values in models.run(part, keys).items():
            for name, array in values.items():
                outputs.setdefault(key, {}).setdefault(name, []).append(array)
    seconds["infer"] += time.perf_counter() - start
    return {key: {**{name: np.concatenate(arrays)
                     for name, arrays in values.items()},
                  "grid_coverage": preprocess.grid_coverage(
                      prepared[models.models[key].preparation][1])}
            for key, values in outputs.items()}


def process_chunk(paths: list[str], inputs_dir: str,
                  options: IngestOptions) -> ChunkResult:
    """Read, preprocess and infer one chunk of source files (in a worker)."""
    seconds = Counter()
    start = time.perf_counter()
    spectra, sources, skipped = [], [], []
    for path in paths:
        source_file = os.path.relpath(path, inputs_dir)
        try:
            found = read_source(path)
        except ReaderError as err:
            skipped.append((source_file, err.reason))
            continue
        spectra.extend(found)
        sources.extend([source_file] * len(found))
    seconds["read"] = time.perf_counter() - start

    outputs = infer_batch(spectra, _models_for(options), options.batch_size,
                          seconds)

    start = time.perf_counter()
    rows = []
    for i, (spectrum, source_file) in enumerate(zip(spectra, sources)):
        row = raw_row(spectrum, source_file)
        if outputs:
            models = _models_for(options)
            row.update(ml_columns(models, outputs, i))
            row.update(space_columns(models, outputs, i))
        rows.append(row)
    seconds["rows"] = time.perf_counter() - start
    return ChunkResult(rows, skipped, dict(seconds))


# ---------------------------------------------------------- scheduling ----

def _chunks(paths: list[str], size: int) -> Iterator[list[str]]:
    for first in range(0, len(paths), size):
        yield paths[first:first + size]


class _LocalPool:
    """Worker processes on this machine (spawned: safe inside DaCHS)."""

    def __init__(self, workers: int):
        import multiprocessing
        self.executor = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"))
        self.workers = workers

    def submit(self, *args):
        return self.executor.submit(process_chunk, *args)

    def wait_one(self, futures):
        done, _ = wait(futures, return_when=FIRST_COMPLETED)
        return done

    def close(self):
        self.executor.shutdown(cancel_futures=True)


class _DaskPool:
    """Workers of a Dask cluster: a scheduler address, or a LocalCluster."""

    def __init__(self, address: str, workers: int):
        from dask.distributed import Client, LocalCluster
        self.cluster = None
        if address == "local":
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                        processes=True, dashboard_address=None)
            address = self.cluster.scheduler_address
        self.client = Client(address)
        self.workers = len(self.client.scheduler_info()["workers"]) or workers

    def submit(self, *args):
        return self.client.submit(process_chunk, *args, pure=False)

    def wait_one(self, futures):
        from dask.distributed import wait as dask_wait
        return dask_wait(list(futures), return_when="FIRST_COMPLETED").done

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def run(paths: Iterable[str], inputs_dir: str, options: IngestOptions,
        summary: IngestSummary | None = None) -> Iterator[dict]:
    """Rows for every spectrum in ``paths``, chunk by chunk, in file order
    within a chunk; chunks come back in completion order.

    Broken files are recorded in ``summary.skipped`` (file and reason) and
    yield nothing.  Time the consumer spends between rows (DaCHS writing to
    the database) is counted as ``db_write``.
    """
    from tqdm import tqdm

    paths = sorted(str(p) for p in paths)
    summary = summary if summary is not None else IngestSummary()
    if not paths:
        return
    workers = options.workers or default_threads()
    if options.dask:
        pool = _DaskPool(options.dask, workers)
    elif workers == 1:
        pool = None
    else:
        pool = _LocalPool(workers)
    started = time.perf_counter()
    bar = tqdm(total=len(paths), unit="file", desc="ingest", mininterval=1.0,
               disable=not options.progress, file=sys.stderr)
    try:
        chunks = list(_chunks(paths, options.chunk_files))
        for result, files in _results(pool, chunks, inputs_dir, options):
            summary.add(result, files)
            bar.update(files)
            bar.set_postfix(spectra=summary.spectra,
                            rate=f"{summary.spectra / max(time.perf_counter() - started, 1e-9):.0f}/s",
                            skipped=len(summary.skipped))
            for row in result.rows:
                before = time.perf_counter()
                yield row
                summary.seconds["db_write"] += time.perf_counter() - before
    finally:
        bar.close()
        if pool is not None:
            pool.close()
        summary.wall = time.perf_counter() - started


def _results(pool, chunks, inputs_dir, options):
    """(ChunkResult, number of files) as chunks finish, few in flight."""
    if pool is None:
        for chunk in chunks:
            yield process_chunk(chunk, inputs_dir, options), len(chunk)
        return
    pending = {}
    queue = iter(chunks)
    limit = 2 * pool.workers
    for chunk in queue:
        pending[pool.submit(chunk, inputs_dir, options)] = len(chunk)
        if len(pending) >= limit:
            break
    while pending:
        for future in pool.wait_one(pending):
            files = pending.pop(future)
            yield future.result(), files
            nxt = next(queue, None)
            if nxt is not None:
                pending[pool.submit(nxt, inputs_dir, options)] = len(nxt)


def new_source_files(data_dir: Path, known: Callable[[], set[str]],
                     inputs_dir: str) -> list[str]:
    """Files under ``data_dir/<collection>/`` not yet in the table."""
    seen = known()
    return [str(path) for path in sorted(data_dir.glob("*/*"))
            if path.is_file() and os.path.relpath(path, inputs_dir) not in seen]
