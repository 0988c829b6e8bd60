"""Preview PNGs, one per spectrum, made in a pass of their own after import.

Previews are what SSAP clients and the web form show before a user pulls a
spectrum.  Making them costs ~20 ms a spectrum, more than everything else at
ingest, so they are made separately and only where missing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from ingest.dachs_import import read_source, sdm_arrays
from ingest.spectrum import ReaderError


def plot_preview(spectrum, path: Path) -> None:
    """Write a small PNG of one spectrum (vacuum wavelength vs. flux)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    arrays = sdm_arrays(spectrum)
    fig, ax = plt.subplots(figsize=(6, 2.2), dpi=80)
    ax.plot(arrays["spectral"], arrays["flux"], lw=0.5, color="k")
    meta = spectrum.meta
    ax.set_title(f"{meta.get('collection')} {meta.get('target_name') or ''}"
                 f"  ({meta['obs_id']})", fontsize=8)
    ax.set_xlabel("vacuum wavelength [Angstrom]", fontsize=7)
    unit = spectrum.flux.unit.to_string() or "relative flux"
    ax.set_ylabel(unit, fontsize=7)
    ax.tick_params(labelsize=6)
    finite = arrays["flux"][np.isfinite(arrays["flux"])]
    if finite.size:
        lo, hi = np.percentile(finite, [0.5, 99.5])
        pad = 0.1 * (hi - lo or abs(hi) or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def make_previews(data_dir: Path, preview_dir: Path) -> tuple[int, int]:
    """Previews for every staged spectrum that has none yet.

    Returns (made, failed); unreadable files are left to the import's report.
    """
    preview_dir.mkdir(parents=True, exist_ok=True)
    made = failed = 0
    sources = sorted(p for p in data_dir.glob("*/*"))
    for source in tqdm(sources, desc="previews", unit="file", mininterval=2.0):
        try:
            spectra = read_source(str(source))
        except ReaderError:
            failed += 1
            continue
        for spectrum in spectra:
            path = preview_dir / f"{spectrum.meta['obs_id']}.png"
            if not path.exists():
                plot_preview(spectrum, path)
                made += 1
    return made, failed
