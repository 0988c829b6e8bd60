"""Active-learning benchmark with a simulated oracle: how many of a rare
class's spectra a campaign finds, against random labelling and against
uncertainty sampling alone.

The oracle is a documented rule standing in for a person:

* ``emission_line``: the rule the bundled labels come from
  (``models/catalogue.py``: an MK type starting with W, or a net H-alpha
  emission equivalent width above 1 A measured on the spectrum itself);
* ``supergiant``: MK luminosity class I (Ia, Iab, Ib) in the catalogue's MK
  type, a class the shipped classifier was never taught.

Each run starts from 2 seed positives (drawn per seed) and ``--iterations``
rounds of ``--batch`` labels; the campaign model (``active_learning.fit``)
is retrained after each round on the latents of ``--spaces``.  Strategies
on the same seeds and label budget:

* ``campaign``: the three sets of an iteration (uncertain, random,
  candidates; a third each), every label trains;
* ``uncertainty``: the most uncertain spectra only;
* ``random``: uniformly random spectra.

The figure is the fraction of all positives labelled "yes" after each
iteration, averaged over ``--seeds`` seeds, with its standard deviation
and range.  Before the first model exists (two positives, no negative),
the seeds' nearest neighbours in latent space stand in for the scores.

    python tests/benchmarks/bench_active_learning.py --seeds 20 --iterations 10
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from retrspect.vo_services.active_learning import (choose, fit,  # noqa: E402
                                                   similarity_scores)
from retrspect.vo_services.campaigns import latent_features  # noqa: E402

SUPERGIANT = re.compile(r"^[OBAFGKMW][0-9.]*(Ia|Iab|Ib|I)(?![IV])")
STRATEGIES = {"campaign": None, "uncertainty": {"uncertain": 1.0},
              "random": {"random": 1.0}}


def _psql(query: str) -> list[list[str]]:
    out = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-d", "gavo", "-AtF",
                          "\t", "-c", query], capture_output=True, text=True, check=True)
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def oracles(ids: list[str]) -> dict[str, np.ndarray]:
    from retrspect.models.catalogue import load_catalogue
    emission = {item.spectrum.meta["obs_id"] for item in load_catalogue(progress=True)
                if item.label == "emission_line_star"}
    mk = dict(_psql("SELECT obs_id, COALESCE(mk_type, '') FROM retrspect.spectra"))
    return {"emission_line": np.array([i in emission for i in ids]),
            "supergiant": np.array([bool(SUPERGIANT.match(mk.get(i, ""))) for i in ids])}


def run(x, truth, strategy, seed, iterations, batch) -> list[float]:
    """Fraction of positives found after each iteration (0 = the seeds)."""
    rng = np.random.default_rng(seed)
    labelled = np.zeros(len(x), bool)
    seeds = rng.choice(np.flatnonzero(truth), 2, replace=False)
    labelled[seeds] = True
    found = [truth[labelled].sum() / truth.sum()]
    for _ in range(iterations):
        y = truth[labelled]
        if y.all():
            scores = similarity_scores(x, np.flatnonzero(labelled))
        else:
            scores = fit(x[labelled], y)(x)
        picks = choose(scores, labelled, batch, rng, STRATEGIES[strategy])
        for pick in picks.values():
            labelled[pick] = True
        found.append(truth[labelled].sum() / truth.sum())
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--spaces", default="generic,halpha")
    args = parser.parse_args(argv)
    spaces = args.spaces.split(",")
    ids, x = latent_features(spaces)
    truths = oracles(ids)
    figures = {"spectra": len(ids), "spaces": spaces, "batch": args.batch,
               "iterations": args.iterations, "seeds": args.seeds,
               "labels_spent": 2 + args.iterations * args.batch, "classes": {}}
    for name, truth in truths.items():
        started = time.perf_counter()
        result = {"positives": int(truth.sum()), "strategies": {}}
        for strategy in STRATEGIES:
            curves = np.array([run(x, truth, strategy, seed, args.iterations, args.batch)
                               for seed in range(args.seeds)])
            result["strategies"][strategy] = {
                "found_mean": [round(float(v), 3) for v in curves.mean(0)],
                "found_std": [round(float(v), 3) for v in curves.std(0)],
                "final_min": round(float(curves[:, -1].min()), 3),
                "final_max": round(float(curves[:, -1].max()), 3)}
        result["seconds"] = round(time.perf_counter() - started, 1)
        figures["classes"][name] = result
        print(f"{name}: {result['positives']} positives of {len(ids)}; found after "
              f"{figures['labels_spent']} labels: " + ", ".join(
                  f"{s} {v['found_mean'][-1]:.2f} ± {v['found_std'][-1]:.2f}"
                  for s, v in result["strategies"].items()))
    print(save("active_learning", figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
