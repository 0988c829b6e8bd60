"""Templates for the velocity / redshift scanner, and its evaluation.

"Training" the :class:`~models.nets.VelocityScanner` means learning its
rest-frame templates from training material only:

* stars: k-means clusters of the continuum-divided spectra of the training
  stars (MILES and STELIB, train split); each template is the mean of its
  cluster's members, rebinned at ``phases`` sub-pixel shifts with
  :func:`ingest.preprocess.prepare_arrays` - the same rebinning ingest runs;
* galaxies: k-means clusters of synthetic galaxies made from the stellar
  population models (with and without nebular lines);
* quasars: clusters of synthetic quasars (:func:`retrspect.models.synthetic.synthetic_qso`).

No held-out (test) spectrum is ever part of a template, so a test star's
velocity is never measured against itself.
"""
from __future__ import annotations

import math

import numpy as np

from retrspect.ingest.preprocess import C_KMS, MODEL_GRID, Grid, prepare_arrays
from retrspect.models import synthetic
from retrspect.models.observation import OI_SKY_LINES

#: Shift ranges per kind, in coarse pixels (pool * grid pixels); see
#: :func:`kind_ranges`.
POOL = 8
PHASES = 4
WINDOW = 4
HALF_WINDOW = 50


#: Strong night-sky emission lines ([O I] 5577, 6300, 6364; vacuum A): their
#: subtraction residuals are the sharpest features in many survey spectra
#: and would otherwise pass for redshifted emission lines.
SKY_LINES = tuple(centre for centre, _ in OI_SKY_LINES)
SKY_HALF_WIDTH = 6.0


def sky_mask(grid=MODEL_GRID):
    """1 everywhere except within SKY_HALF_WIDTH A of a sky line."""
    wave = grid.wavelength
    mask = np.ones(grid.npix, dtype=np.float32)
    for line in SKY_LINES:
        mask[np.abs(wave - line) <= SKY_HALF_WIDTH] = 0.0
    return mask


#: The deepest galaxy redshift scanned: deep VLT surveys hold galaxies to
#: z ~ 1, which the grid sees in their rest-frame near UV.
GALAXY_Z_MAX = 1.0


def kind_ranges(grid=MODEL_GRID, pool=POOL):
    """Coarse shift ranges: stars +-3000 km/s, galaxies z -0.005..GALAXY_Z_MAX,
    QSOs 0.1..5."""
    dlnl = math.log(10) * grid.loglam_step
    coarse = pool * dlnl

    def shift(z):
        return math.log1p(z) / coarse

    star = int(math.ceil(3000.0 / C_KMS / coarse))
    return {
        "star": (-star, star),
        "galaxy": (int(math.floor(shift(-0.005))), int(math.ceil(shift(GALAXY_Z_MAX)))),
        "qso": (int(math.floor(shift(0.1))), int(math.ceil(shift(5.0)))),
    }


def box_continuum(flux, covered, half_window=HALF_WINDOW):
    """Coverage-weighted running mean, as ``VelocityScanner.box_sum`` does."""
    def box(x):
        c = np.cumsum(np.pad(x, (half_window + 1, half_window)))
        return c[2 * half_window + 1:] - c[: -(2 * half_window + 1)]
    return box(flux * covered) / np.maximum(box(covered), 1.0)


def residual(flux, weight, half_window=HALF_WINDOW):
    """Continuum-divided residual ``flux / continuum - 1`` (0 where uncovered)."""
    covered = (weight > 0).astype(np.float64)
    cont = box_continuum(flux.astype(np.float64), covered, half_window)
    ok = (covered > 0) & (cont > 1e-3)
    return np.where(ok, flux / np.where(ok, cont, 1.0) - 1.0, 0.0)


def extended(grid, lo, hi):
    """The grid extended by lo pixels to the blue and hi to the red."""
    return Grid(grid.loglam_start - lo * grid.loglam_step, grid.loglam_step,
                grid.npix + lo + hi, grid.resolving_power)


def phase_rows(wave, flux, good, grid, lo, hi, phases=PHASES, resolving_power=None):
    """A rest-frame spectrum's residual on the extended grid at each phase.

    Returns
    -------
    ndarray, shape (phases, lo + npix + hi)
    """
    ext = extended(grid, lo, hi)
    dlnl = math.log(10) * grid.loglam_step
    rows = []
    for q in range(phases):
        z = math.exp(q / phases * dlnl) - 1.0
        f, w = prepare_arrays(wave * (1 + z), flux, good, None, ext,
                              resolving_power=resolving_power)
        rows.append(residual(f, w))
    return np.array(rows)


def kmeans(x, k, rng, iterations=25):
    """Plain k-means (k-means++ start); returns labels."""
    norms = (x * x).sum(1)

    def distances(c):
        return norms[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]

    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = distances(np.array(centres)).min(1).clip(0)
        centres.append(x[rng.choice(len(x), p=d / d.sum())])
    centres = np.array(centres)
    for _ in range(iterations):
        labels = distances(centres).argmin(1)
        for j in range(k):
            if np.any(labels == j):
                centres[j] = x[labels == j].mean(0)
    return labels


def build_kind(name, sources, k, rng, grid=MODEL_GRID, *, pool=POOL,
               phases=PHASES, window=WINDOW):
    """Cluster rest-frame sources into k templates of one kind.

    Parameters
    ----------
    name : {"star", "galaxy", "qso"}
    sources : list of (wave, flux, good, resolving_power)
    k : int

    Returns
    -------
    dict
        The ``kinds`` entry :class:`~models.nets.VelocityScanner` takes.
    """
    s_min, s_max = kind_ranges(grid, pool)[name]
    lo = pool * s_max + window + 8
    hi = max(0, window + 8 - pool * s_min)
    rows = np.array([phase_rows(*src[:3], grid, lo, hi, phases, src[3]) for src in sources])
    # cluster on phase 0 over the grid proper
    core = rows[:, 0, lo:lo + grid.npix]
    labels = kmeans(core, min(k, len(sources)), rng)
    fine = np.array([rows[labels == j].mean(0) for j in np.unique(labels)])
    n_coarse = grid.npix // pool
    n_shift = s_max - s_min + 1
    coarse = np.zeros((len(fine), n_coarse + n_shift - 1))
    for i in range(coarse.shape[1]):
        # coarse rest pixel (i - s_max) covers fine rest pixels pool*(i - s_max) + [0, pool)
        start = pool * (i - s_max) + lo
        stop = start + pool
        if start >= 0 and stop <= fine.shape[2]:
            coarse[:, i] = fine[:, 0, start:stop].mean(1)
    return {"name": name, "coarse": coarse.astype(np.float32),
            "fine": fine.astype(np.float32), "s_min": s_min, "s_max": s_max,
            "fine_offset": lo, "members": np.bincount(labels).tolist()}


def build_scanner(items, rng, *, n_star=24, n_galaxy=8, n_qso=2, n_synthetic=200,
                  grid=MODEL_GRID, progress=None):
    """Build and return a :class:`~models.nets.VelocityScanner` and its summary."""
    from retrspect.models.nets import VelocityScanner
    stars = [(i.wave, i.flux, i.good, i.spectrum.meta["resolving_power"])
             for i in items if i.kind == "star" and i.split == "train"]
    kinds = [build_kind("star", stars, n_star, rng, grid)]
    if progress:
        progress("star templates")
    ssps = [t for t in synthetic.ssp_library() if not t.name.startswith("bpass")]
    galaxies = []
    for _ in range(n_synthetic):
        # one kinematic component: k-means centres for redshifts, where a
        # second (offset, broad) one would only blur the lines
        g = synthetic.synthetic_galaxy(rng, ssps, emission=rng.random() < 0.5, second_component=False)
        galaxies.append((g.wave, g.flux, g.good, None))
    kinds.append(build_kind("galaxy", galaxies, n_galaxy, rng, grid))
    if progress:
        progress("galaxy templates")
    qsos = []
    for _ in range(n_synthetic // 2):
        q = synthetic.synthetic_qso(rng, float(rng.uniform(0.3, 4.5)))
        qsos.append((q.wave, q.flux, q.good, None))
    kinds.append(build_kind("qso", qsos, n_qso, rng, grid))
    if progress:
        progress("qso templates")
    dlnl = math.log(10) * grid.loglam_step
    scanner = VelocityScanner(dlnl, grid.npix, kinds, pool=POOL, phases=PHASES,
                              window=WINDOW, half_window=HALF_WINDOW,
                              pixel_mask=sky_mask(grid))
    summary = {k["name"]: {"templates": len(k["fine"]), "members": k["members"],
                           "z_range": [math.exp(k["s_min"] * POOL * dlnl) - 1,
                                       math.exp(k["s_max"] * POOL * dlnl) - 1]}
               for k in kinds}
    return scanner, summary
