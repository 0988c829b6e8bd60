"""What the latent dimensions mean: informative dimensions and mutual information.

Following Sedaghat et al. (2021):

* the median-absolute-deviation rule: dimension d is informative when the
  MAD of its posterior mean over the data exceeds 0.02 (:func:`mad_rule`);
* an independent, information-theoretic estimate: the mutual information
  I(x; z_d) between a spectrum and latent dimension d under the encoder,
  E_x KL(q(z_d | x) || q(z_d)) with q(z_d) the aggregate posterior
  (:func:`latent_information`), in bits;
* the mutual information of each dimension with Teff, log g, [Fe/H] and
  the radial velocity, estimated twice: from 10 x 10 joint histograms as in
  the paper (:func:`mi_histogram`) and with the Kraskov-Stoegbauer-
  Grassberger k-nearest-neighbour estimator (:func:`mi_ksg`), which is
  nearly unbiased for continuous variables.

Pure numpy/scipy; the plotting helpers use matplotlib's Agg backend.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

from retrspect.ingest.latents import latent_information  # noqa: F401 (the card's estimator)

#: Sedaghat et al.'s threshold on the MAD of a latent mean.
MAD_THRESHOLD = 0.02
#: A dimension carrying less than this many bits about the spectrum is idle.
INFORMATION_THRESHOLD = 0.1


def mad(values, axis=0):
    """Median absolute deviation (unscaled)."""
    values = np.asarray(values, dtype=np.float64)
    return np.median(np.abs(values - np.median(values, axis=axis)), axis=axis)


def mad_rule(latent_mean, threshold=MAD_THRESHOLD):
    """Per-dimension MAD of the latent means and the informative mask."""
    m = mad(latent_mean)
    return m, m > threshold


def mi_histogram(x, y, bins=10):
    """Mutual information (bits) from a bins x bins joint histogram (equal-count bins)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]

    def edges(v):
        e = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)))
        return e if len(e) > 2 else np.array([v.min() - 1, v.max() + 1])

    joint, _, _ = np.histogram2d(x, y, bins=[edges(x), edges(y)])
    p = joint / joint.sum()
    px = p.sum(1, keepdims=True)
    py = p.sum(0, keepdims=True)
    nz = p > 0
    return float(np.sum(p[nz] * np.log2(p[nz] / (px @ py)[nz])))


def mi_ksg(x, y, k=5, *, rng=None):
    """Kraskov-Stoegbauer-Grassberger MI estimate (algorithm 1), in bits.

    Both variables are rank-transformed to uniform margins first (MI is
    invariant under monotonic maps; this makes the max-norm neighbourhoods
    balanced), with a tiny jitter to break ties.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n <= k + 1:
        return float("nan")

    def uniform(v):
        v = v + 1e-10 * rng.normal(size=v.size) * (np.std(v) + 1e-12)
        return np.argsort(np.argsort(v)) / (n - 1)

    xs, ys = uniform(x), uniform(y)
    joint = np.column_stack([xs, ys])
    tree = cKDTree(joint)
    dist, _ = tree.query(joint, k=k + 1, p=np.inf)
    radius = np.nextafter(dist[:, -1], 0)
    nx = cKDTree(xs[:, None]).query_ball_point(xs[:, None], radius, p=np.inf, return_length=True) - 1
    ny = cKDTree(ys[:, None]).query_ball_point(ys[:, None], radius, p=np.inf, return_length=True) - 1
    mi = digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1))
    return max(float(mi) / math.log(2), 0.0)


def mi_table(latent, parameters, names, *, estimator="ksg"):
    """MI (bits) of every latent dimension with every parameter.

    Parameters
    ----------
    latent : ndarray (n, d)
    parameters : ndarray (n, m)
        NaN where unknown (those rows are skipped per parameter).
    names : list of str

    Returns
    -------
    ndarray (d, m)
    """
    fn = mi_ksg if estimator == "ksg" else mi_histogram
    out = np.zeros((latent.shape[1], len(names)))
    for j in range(len(names)):
        for d in range(latent.shape[1]):
            out[d, j] = fn(latent[:, d], parameters[:, j])
    return out


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path, dpi=90):
    """Save a figure as a small PNG and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_latent_pairs(latent, teff, dims, path, title=""):
    """Scatter plots of latent-dimension pairs coloured by log Teff."""
    plt = _pyplot()
    dims = list(dims)[:5]
    n = len(dims)
    fig, axes = plt.subplots(n - 1, n - 1, figsize=(2.1 * (n - 1), 2.1 * (n - 1)),
                             squeeze=False)
    order = np.argsort(teff)
    colour = np.log10(teff[order])
    for i in range(1, n):
        for j in range(n - 1):
            ax = axes[i - 1, j]
            if j >= i:
                ax.axis("off")
                continue
            sc = ax.scatter(latent[order, dims[j]], latent[order, dims[i]], c=colour, s=3,
                            cmap="plasma_r", rasterized=True, linewidths=0)
            ax.tick_params(labelsize=6)
            if i == n - 1:
                ax.set_xlabel(f"z{dims[j]}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"z{dims[i]}", fontsize=8)
    cax = fig.add_axes([0.92, 0.15, 0.02, 0.7])
    cb = fig.colorbar(sc, cax=cax)
    cb.set_label("log10 Teff / K", fontsize=8)
    cb.ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    return save(fig, path)


def plot_mi_heatmap(mi, names, dims, mad_values, information, path, title=""):
    """Heat map of MI (bits) per latent dimension and parameter, with MAD and I(x;z)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 0.22 * len(dims) + 1.6),
                             gridspec_kw={"width_ratios": [len(names), 2.2]})
    ax = axes[0]
    im = ax.imshow(mi[dims], aspect="auto", cmap="viridis", vmin=0)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_yticks(range(len(dims)))
    ax.set_yticklabels([f"z{d}" for d in dims], fontsize=6)
    for (r, c), v in np.ndenumerate(mi[dims]):
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=5,
                color="white" if v < 0.6 * mi.max() else "black")
    fig.colorbar(im, ax=ax, label="MI / bits", fraction=0.05)
    ax.set_title(title, fontsize=9)
    ax = axes[1]
    y = np.arange(len(dims))
    ax.barh(y - 0.2, mad_values[dims] / MAD_THRESHOLD, height=0.4, label="MAD / 0.02")
    ax.barh(y + 0.2, information[dims] / INFORMATION_THRESHOLD, height=0.4,
            label="I(x;z) / 0.1 bit")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(len(dims) - 0.5, -0.5)
    ax.set_yticks([])
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, loc="lower right")
    ax.set_title("informative if > 1", fontsize=8)
    return save(fig, path)


def plot_reconstructions(wave, examples, path):
    """Spectra (flux, reconstruction) with residual panels.

    examples : list of (label, flux, weight, reconstruction, anomaly)
    """
    plt = _pyplot()
    n = len(examples)
    fig, axes = plt.subplots(2 * n, 1, figsize=(7.5, 1.55 * n * 1.45),
                             gridspec_kw={"height_ratios": [3, 1] * n}, sharex=True)
    for k, (label, flux, weight, rec, anomaly) in enumerate(examples):
        ax, rx = axes[2 * k], axes[2 * k + 1]
        covered = weight > 0
        f = np.where(covered, flux, np.nan)
        ax.plot(wave, f, lw=0.5, color="0.3", label="data")
        ax.plot(wave, rec, lw=0.6, color="C3", label="VAE")
        ax.set_ylabel("flux", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.text(0.01, 0.88, f"{label}  anomaly {anomaly:.2f}", transform=ax.transAxes,
                fontsize=7)
        top = np.nanpercentile(f, 99.5) if np.any(covered) else 2
        ax.set_ylim(min(0, np.nanmin(f) if np.any(covered) else 0), 1.15 * top)
        rx.plot(wave, f - rec, lw=0.4, color="C0")
        rx.axhline(0, color="k", lw=0.5)
        rx.set_ylim(-0.15, 0.15)
        rx.set_ylabel("resid", fontsize=7)
        rx.tick_params(labelsize=6)
        if k == 0:
            ax.legend(fontsize=6, loc="upper right")
    axes[-1].set_xlabel("vacuum wavelength / A", fontsize=8)
    return save(fig, path)


def plot_confusion(confusion, labels, path, title=""):
    """Confusion matrix (rows: truth, columns: prediction), counts shown."""
    plt = _pyplot()
    confusion = np.asarray(confusion)
    keep = (confusion.sum(0) + confusion.sum(1)) > 0
    sub = confusion[np.ix_(keep, keep)]
    names = [label.replace("emission_line_star", "em. star") for label, k in zip(labels, keep) if k]
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    rows = sub.sum(1, keepdims=True).clip(1)
    ax.imshow(sub / rows, cmap="Blues", vmin=0, vmax=1)
    for (r, c), v in np.ndenumerate(sub):
        if v:
            ax.text(c, r, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v / rows[r, 0] > 0.6 else "black")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title(title, fontsize=9)
    return save(fig, path)


def plot_reliability(bins, path, title=""):
    """Reliability diagram: accuracy against mean confidence per confidence
    bin (``evaluate.calibration``'s rows), marker area by count, and the
    diagonal a calibrated classifier lies on."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="calibrated")
    conf = [b["confidence"] for b in bins]
    acc = [b["accuracy"] for b in bins]
    ax.plot(conf, acc, color="C0", lw=1)
    ax.scatter(conf, acc, s=[8 + 2 * b["n"] for b in bins], color="C0", zorder=3,
               label="held-out stars (area: count)")
    for b in bins:
        ax.annotate(str(b["n"]), (b["confidence"], b["accuracy"]), fontsize=6,
                    xytext=(4, -8), textcoords="offset points")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (probability of the predicted class)", fontsize=8)
    ax.set_ylabel("accuracy", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    return save(fig, path)


def plot_velocity(delta, truth, manga, path, title=""):
    """Injected-velocity residuals and MaNGA redshift residuals."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(9.5, 2.8))
    ok = np.isfinite(delta)
    axes[0].scatter(truth[ok], delta[ok], s=3, alpha=0.5, rasterized=True, linewidths=0)
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set_xlabel("injected v / km/s", fontsize=8)
    axes[0].set_ylabel("measured - injected / km/s", fontsize=8)
    axes[0].set_ylim(-30, 30)
    axes[1].hist(np.clip(delta[ok], -30, 30), bins=60, color="C0")
    axes[1].set_xlabel("measured - injected / km/s", fontsize=8)
    for lim in (-5, 5):
        axes[1].axvline(lim, color="C3", lw=0.8, ls="--")
    zs = np.array([s["z_systemic"] for s in manga])
    dz = np.array([s["dz_over_1pz"] for s in manga])
    axes[2].scatter(zs, np.clip(dz, -2e-3, 2e-3), s=12)
    axes[2].axhspan(-5e-4, 5e-4, color="C2", alpha=0.2, label="target")
    axes[2].set_xlabel("MaNGA systemic z", fontsize=8)
    axes[2].set_ylabel("dz / (1+z) (clipped)", fontsize=8)
    axes[2].legend(fontsize=6)
    for ax in axes:
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def plot_training(histories, path):
    """Loss per epoch of the trained models."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(histories), figsize=(3.3 * len(histories), 2.4),
                             squeeze=False)
    for ax, (name, rows) in zip(axes[0], histories.items()):
        epochs = [r["epoch"] for r in rows]
        ax.plot(epochs, [r["loss"] for r in rows], marker=".")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_ylabel("loss", fontsize=7)
        ax.set_yscale("log")
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return save(fig, path)


def plot_supervision_sweep(sweep, path):
    """Validation log g error against search-by-example self-retrieval, one
    point per VAE supervision weight: the trade the weight is chosen on."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    rows = sweep["rows"]
    for noise, marker in (("0.02", "o"), ("0.05", "s")):
        x = [r["val"]["logg_mae"] for r in rows]
        y = [100 * r["val"][f"self_retrieval_noise_{noise}"] for r in rows]
        ax.plot(x, y, marker=marker, lw=0.8, label=f"{100 * float(noise):g}% noise")
        for r, xi, yi in zip(rows, x, y):
            bold = r["weight"] == sweep["chosen"]
            ax.annotate(f"{r['weight']:g}", (xi, yi), fontsize=6, xytext=(3, 3),
                        textcoords="offset points", fontweight="bold" if bold else "normal")
    ax.set_xlabel("validation log g MAE (dex, k=5 latent kNN)", fontsize=7)
    ax.set_ylabel("user copies finding their original first (%)", fontsize=7)
    ax.set_title(f"VAE supervision weight (chosen: {sweep['chosen']:g})", fontsize=8)
    ax.invert_xaxis()
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return save(fig, path)
