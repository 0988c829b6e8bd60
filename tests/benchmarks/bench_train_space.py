"""Space-training benchmark: time to train a latent space on the archive's
own spectra, and the quality it reaches (issue 15's budget).

Runs ``retrspect train-space`` as an operator would, on the archive's
MILES and STELIB spectra (about 1,200, within the budget's 5,000) with a
window and settings given on the command line (default: the shipped
H-alpha space's), on the CPU, and records the wall time, the test split's
self-retrieval of a user's 2% noisy copy, and, as the baseline measured in
the same run, the same search on the prepared flux itself.

    python tests/benchmarks/bench_train_space.py
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VENV_BIN, save  # noqa: E402

#: the budget from the issue
TARGET_MINUTES = 15.0
TARGET_SELF_RETRIEVAL = 0.90
MAX_SPECTRA = 5000
#: the shipped H-alpha space's recipe (README: "A window space on H-alpha")
DEFAULT = ["--collections", "MILES", "STELIB", "XSL", "MaNGA", "--window", "6519",
           "6732", "--npix", "140", "--frame", "rest", "--encoder", "linear",
           "--latent-dim", "64", "--epochs", "40", "--pool", "4096", "--kl-weight", "0.01",
           "--set", "vae_bank_weight=0", "--set", "vae_consistency=0",
           "--set", "vae_strength=0.3"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rest", nargs=argparse.REMAINDER,
                        help="train-space options replacing the default recipe")
    args = parser.parse_args(argv)
    recipe = args.rest or DEFAULT
    from retrspect.ingest.infer import load_model
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run([str(VENV_BIN / "retrspect"), "train-space", "benchspace", *recipe,
                        "--device", "cpu", "--out", out], check=True)
        minutes = (time.perf_counter() - started) / 60
        (path,) = Path(out).glob("benchspace-*.onnx")
        figures = load_model(path).info["metrics"]
    n = figures["n_spectra"]
    first = figures["self_retrieval"]["first"]
    result = {
        "recipe": recipe, "cores": 2, "device": "cpu",
        "n_spectra": n, "n_split": figures["n_split"],
        "minutes": round(minutes, 2),
        "self_retrieval_2pct": first,
        "self_retrieval_2pct_se": figures["self_retrieval"]["se"],
        "baseline_flux_self_retrieval_2pct": figures["self_retrieval_flux"],
        "reconstruction_l1": figures["reconstruction_l1"],
        "targets": {"minutes": TARGET_MINUTES, "self_retrieval": TARGET_SELF_RETRIEVAL,
                    "max_spectra": MAX_SPECTRA},
        "met": {"minutes": minutes <= TARGET_MINUTES and n <= MAX_SPECTRA,
                "self_retrieval": first >= TARGET_SELF_RETRIEVAL},
    }
    print(save("train_space", result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
