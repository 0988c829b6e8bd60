"""Ingest benchmark: spectra/s end to end, with the models and without.

Makes N spectrum files by augmenting the real MILES stars (velocity shift,
noise, flux scale; 4096 pixels each, written as 1-D FITS images), then
imports them through the demo's own RD (``dachs imp``, in schema
retrspect_bench) three times in one run: metadata only (``--no-models``),
the built-in models (the ``generic`` space, classifier, velocity), and every
shipped model (``generic`` and the plug-in space ``pca_blue``, a table and
HNSW index more).  It records time per stage (read / preprocess / infer /
database write), spectra per second, and the peak memory of the importing
process tree at two sizes, to show that memory is flat in N.

    python tests/benchmarks/bench_ingest.py            # 20000 and 5000
    python tests/benchmarks/bench_ingest.py --sizes 2000
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BENCH_RD, PeakMemory, VENV_BIN, dachs,  # noqa: E402
                    save, write_bench_rd)

FILES_ROOT = Path("/var/tmp/retrspect-bench")
NPIX = 4096
#: targets from the issues: the rate with every shipped model (two latent
#: spaces since issue 14), and the models' cost over metadata alone
TARGET_RATE = 450.0
TARGET_OVERHEAD = 0.5
#: what each configuration imports with
CONFIGS = ("metadata", "generic", "all spaces")


def _make_chunk(args) -> int:
    """Write augmented copies of MILES stars (run in worker processes)."""
    from astropy.io import fits
    from retrspect.ingest.bundled import bundled_sources
    from retrspect.ingest.preprocess import C_KMS
    from retrspect.ingest.readers import read_spectra

    first, count, directory, seed = args
    rng = np.random.default_rng(seed)
    miles = [s.path for s in bundled_sources() if s.collection == "MILES"]
    for i in range(first, first + count):
        spectrum = read_spectra(miles[rng.integers(len(miles))])[0]
        wave = spectrum.wavelength.value
        flux = np.where(spectrum.mask, np.nan, spectrum.flux.value)
        velocity = rng.uniform(-300, 300)
        target = 3540.0 + 0.9 * np.arange(NPIX)
        shifted = np.interp(target, wave * (1 + velocity / C_KMS), flux)
        snr = rng.uniform(20, 100)
        shifted = shifted * rng.uniform(0.5, 2.0)
        shifted += rng.standard_normal(NPIX) * np.nanmedian(shifted) / snr
        hdu = fits.PrimaryHDU(shifted.astype(np.float32))
        hdu.header.update({"CRVAL1": 3540.0, "CDELT1": 0.9, "CRPIX1": 1.0,
                           "CTYPE1": "AWAV", "CUNIT1": "Angstrom",
                           "OBJECT": f"bench star {i}"})
        hdu.writeto(directory / f"bench_{i:06d}.fits", overwrite=True)
    return count


def make_files(n: int) -> Path:
    """``n`` augmented spectra under FILES_ROOT/n<n>/bench/ (cached)."""
    root = FILES_ROOT / f"n{n}"
    directory = root / "bench"
    if directory.is_dir() and len(list(directory.glob("*.fits"))) == n:
        return root
    directory.mkdir(parents=True, exist_ok=True)
    step = 500
    jobs = [(first, min(step, n - first), directory, first)
            for first in range(0, n, step)]
    started = time.perf_counter()
    with ProcessPoolExecutor() as pool:
        made = sum(pool.map(_make_chunk, jobs))
    print(f"made {made} files in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    subprocess.run(["chmod", "-R", "a+rX", str(FILES_ROOT)], check=True)
    return root


SUMMARY = re.compile(r"ingested (\d+) spectra from (\d+) files in ([\d.]+) s")
STAGES = re.compile(r"(read|preprocess|infer|rows|db_write) ([\d.]+) s")


def builtin_model_dir() -> Path:
    """The shipped models without the plug-in spaces (links to the files)."""
    from retrspect.ingest.infer import model_dir_from_environment, installed_models
    directory = FILES_ROOT / "builtin-models"
    subprocess.run(["rm", "-rf", str(directory)], check=True)
    directory.mkdir(parents=True)
    for model in installed_models(model_dir_from_environment()).builtin.values():
        (directory / model.path.name).symlink_to(model.path)
    subprocess.run(["chmod", "-R", "a+rX", str(directory)], check=True)
    return directory


def run_import(config: str) -> dict:
    """One import of the bench data into empty tables; its figures."""
    dachs("drop", BENCH_RD, check=False)
    env = {"RETRSPECT_NO_MODELS": "1" if config == "metadata" else ""}
    if config == "generic":
        env["RETRSPECT_MODEL_DIR"] = str(builtin_model_dir())
    memory = PeakMemory()
    started = time.perf_counter()
    process = subprocess.Popen(
        ["runuser", "-u", "dachsroot", "--", str(VENV_BIN / "dachs"), "imp",
         BENCH_RD],
        env={**__import__("os").environ,
             "PATH": f"{VENV_BIN}:{__import__('os').environ['PATH']}", **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8",
        errors="replace")
    memory.watch(process.pid)
    out, err = process.communicate()
    wall = time.perf_counter() - started
    peak = memory.stop()
    if process.returncode != 0:
        raise RuntimeError(f"bench import failed:\n{out[-2000:]}{err[-3000:]}")
    summary = SUMMARY.search(err)
    spectra, files, pipeline_wall = (int(summary.group(1)),
                                     int(summary.group(2)),
                                     float(summary.group(3)))
    stages = {name: float(value) for name, value in STAGES.findall(err)}
    return {"config": config, "models": config != "metadata",
            "spectra": spectra, "files": files,
            "command_wall_s": round(wall, 2),
            "pipeline_wall_s": pipeline_wall,
            "spectra_per_s_end_to_end": round(spectra / wall, 1),
            "spectra_per_s_pipeline": round(spectra / pipeline_wall, 1),
            "stage_cpu_s": stages, "peak_memory_mb": round(peak, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 5000])
    args = parser.parse_args(argv)

    runs = []
    for n in args.sizes:
        root = make_files(n)
        write_bench_rd(root)
        for config in CONFIGS:
            result = run_import(config)
            result["n"] = n
            runs.append(result)
            print(result, file=sys.stderr)
    dachs("drop", BENCH_RD, check=False)

    largest = max(args.sizes)
    at = {r["config"]: r for r in runs if r["n"] == largest}
    every, generic, without = at["all spaces"], at["generic"], at["metadata"]
    overhead = every["command_wall_s"] / without["command_wall_s"] - 1
    peaks = [r["peak_memory_mb"] for r in runs if r["config"] == "all spaces"]
    figures = {
        "runs": runs,
        "largest_n": largest,
        "end_to_end_spectra_per_s": every["spectra_per_s_end_to_end"],
        "generic_only_spectra_per_s": generic["spectra_per_s_end_to_end"],
        "second_space_cost_fraction": round(
            every["command_wall_s"] / generic["command_wall_s"] - 1, 3),
        "models_overhead_fraction": round(overhead, 3),
        "peak_memory_mb_by_n": {r["n"]: r["peak_memory_mb"]
                                for r in runs if r["config"] == "all spaces"},
        "targets": {"spectra_per_s": TARGET_RATE,
                    "models_overhead": TARGET_OVERHEAD,
                    "memory": "flat in N"},
        "met": {"spectra_per_s": every["spectra_per_s_end_to_end"]
                >= TARGET_RATE,
                "models_overhead": overhead <= TARGET_OVERHEAD,
                "memory_flat": max(peaks) <= 1.25 * min(peaks)},
    }
    print(save("ingest", figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
