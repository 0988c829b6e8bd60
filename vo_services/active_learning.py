"""Active learning for a campaign: a small classifier on latent vectors, and
the three sets an iteration shows a person.

As in VO-CLOUD's active-learning tool (Škoda & Podsztavek), an iteration
shows the most **uncertain** spectra (their labels teach the next model
most), a **random** set (the only honest estimate of how common the class
is and how good the model is) and the current top **candidates**.  Every
label, from any set, trains the next model.  The model is an L2-regularised
logistic regression on the concatenated latent vectors of the campaign's
spaces, fitted by Newton's method: it takes milliseconds for thousands of
labels and needs nothing beyond numpy.  It never sees the shipped
classifier's outputs.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

#: the labels a person gives; only "yes" and "no" train the model
LABELS = ("yes", "no", "noise", "skip")
#: an iteration's sets, in the order the batch is filled
SETS = ("uncertain", "random", "candidates")


@dataclass(frozen=True)
class Scorer:
    """A fitted campaign model: standardisation, weights, and its version
    (a hash of the parameters, so published scores name their model)."""
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    @property
    def version(self) -> str:
        """The parameters to 6 decimals, hashed: the same labels give the
        same version in any process (BLAS threads change the last bits)."""
        digest = hashlib.sha256()
        for part in (self.mean, self.scale, self.weights, np.array([self.bias])):
            digest.update(np.round(np.asarray(part, np.float64), 6).tobytes())
        return digest.hexdigest()[:12]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Probability of the target class for each row of ``features``."""
        z = ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.weights
        return 1.0 / (1.0 + np.exp(-np.clip(z + self.bias, -50, 50)))


def fit(features: np.ndarray, positive: np.ndarray, *, l2: float = 1.0,
        iterations: int = 50) -> Scorer:
    """Logistic regression with class-balanced weights (a rare class counts
    as much as the rest) and an L2 penalty on the weights, by Newton's
    method on the standardised features.

    Raises
    ------
    ValueError
        Without at least one positive and one negative label.
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(positive, bool)
    if y.all() or not y.any():
        raise ValueError("a campaign model needs at least one 'yes' and one 'no' label")
    mean = x.mean(0)
    scale = x.std(0) + 1e-6
    xs = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    weight = np.where(y, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    penalty = np.full(xs.shape[1], l2)
    penalty[-1] = 0.0                    # the bias is not shrunk
    w = np.zeros(xs.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(xs @ w, -50, 50)))
        gradient = xs.T @ (weight * (p - y)) + penalty * w
        hessian = (xs * (weight * p * (1 - p))[:, None]).T @ xs + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Scorer(mean, scale, w[:-1], float(w[-1]))


def choose(scores: np.ndarray, labelled: np.ndarray, batch: int, rng: np.random.Generator,
           shares: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Indices of the unlabelled rows to show, per set, ``batch`` in all:
    the most uncertain (score nearest 0.5), a uniform random set, and the
    highest scores; a row is shown once.  ``shares`` splits the batch
    (default: a third each)."""
    shares = shares or {name: 1 / len(SETS) for name in SETS}
    counts = {name: int(round(batch * shares.get(name, 0))) for name in SETS}
    counts[max(counts, key=counts.get)] += batch - sum(counts.values())
    free = ~np.asarray(labelled, bool)
    chosen: dict[str, np.ndarray] = {}
    for name in SETS:
        pool = np.flatnonzero(free)
        n = min(counts[name], len(pool))
        if name == "uncertain":
            pick = pool[np.argsort(np.abs(scores[pool] - 0.5), kind="stable")[:n]]
        elif name == "random":
            pick = rng.choice(pool, n, replace=False) if n else pool[:0]
        else:
            pick = pool[np.argsort(-scores[pool], kind="stable")[:n]]
        chosen[name] = pick
        free[pick] = False
    return chosen


def similarity_scores(features: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Scores before a model can be fitted (positives only, no negative
    yet): closeness to the nearest positive, in (0, 1]."""
    x = np.asarray(features, np.float64)
    distance = np.full(len(x), np.inf)
    for start in range(0, len(positives), 64):     # bounded memory for many seeds
        chunk = x[np.asarray(positives)[start:start + 64]]
        squared = (x ** 2).sum(1)[:, None] + (chunk ** 2).sum(1)[None] - 2 * x @ chunk.T
        distance = np.minimum(distance, np.sqrt(np.clip(squared, 0, None)).min(1))
    return np.exp(-distance / (np.median(distance) + 1e-12))


def proportion_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval for a proportion k/n: honest for k = 0,
    which a random set of a rare class mostly gives."""
    from scipy.stats import beta
    if n == 0:
        return 0.0, 1.0
    alpha = 1 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high
