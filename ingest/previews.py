"""Preview PNGs, one per spectrum, made in a pass of their own after import.

Previews are what SSAP clients and the web form show before a user pulls a
spectrum.  Making them costs ~20 ms of CPU a spectrum, more than everything
else at ingest, so they are made separately, in parallel and only where
missing.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retrspect.ingest.plots import new_axes, served_xy
from retrspect.ingest.sources import read_source
from retrspect.ingest.errors import ReaderError


@lru_cache(maxsize=1)
def _canvas():
    """One figure per process, redrawn for each spectrum: a third of the
    cost of a new figure and ``tight_layout`` per PNG."""
    fig, ax = new_axes(6, 2.2, 80)
    fig.subplots_adjust(left=0.12, right=0.98, bottom=0.2, top=0.88)
    line, = ax.plot([], [], lw=0.5, color="k")
    return fig, ax, line


def plot_preview(spectrum, path: Path) -> None:
    """Write a small PNG of one spectrum (vacuum wavelength vs. flux)."""
    fig, ax, line = _canvas()
    wavelength, flux = served_xy(spectrum)
    line.set_data(wavelength, flux)
    meta = spectrum.meta
    ax.set_title(f"{meta.get('collection')} {meta.get('target_name') or ''}"
                 f"  ({meta['obs_id']})", fontsize=8)
    ax.set_ylabel(spectrum.flux.unit.to_string() or "relative flux",
                  fontsize=7)
    ax.set_autoscale_on(True)
    ax.relim()
    ax.autoscale_view()
    finite = flux[np.isfinite(flux)]
    if finite.size:
        lo, hi = np.percentile(finite, [0.5, 99.5])
        pad = 0.1 * (hi - lo or abs(hi) or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
    fig.savefig(path, format="png")


def _previews_for(source: Path, preview_dir: Path) -> tuple[int, int]:
    """(made, failed) for one source file; each PNG is written under a
    temporary name and renamed, so an interrupted pass leaves no half file."""
    try:
        spectra = read_source(str(source))
    except ReaderError:
        return 0, 1
    made = 0
    for spectrum in spectra:
        path = preview_dir / f"{spectrum.meta['obs_id']}.png"
        if not path.exists():
            partial = path.with_suffix(".png.part")
            plot_preview(spectrum, partial)
            partial.replace(path)
            made += 1
    return made, 0


def make_previews(data_dir: Path, preview_dir: Path,
                  workers: int = 0) -> tuple[int, int]:
    """Previews for every staged spectrum that has none yet, in a pool of
    ``workers`` processes (0: one per core).

    Returns (made, failed); unreadable files are left to the import's report.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    from retrspect.ingest.infer import default_threads

    preview_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in data_dir.glob("*/*"))
    made = failed = 0
    with ProcessPoolExecutor(workers or default_threads(),
                             mp_context=multiprocessing.get_context("spawn")
                             ) as pool:
        results = pool.map(partial(_previews_for, preview_dir=preview_dir),
                           sources, chunksize=16)
        for file_made, file_failed in tqdm(results, total=len(sources),
                                           desc="previews", unit="file",
                                           mininterval=2.0):
            made += file_made
            failed += file_failed
    return made, failed
