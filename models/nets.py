"""The three models as torch modules (nothing else lives here).

Every module takes the two arrays :func:`ingest.preprocess.prepare` returns,
``flux`` and ``weight`` (float32, shape ``[batch, npix]``), and its
``forward`` returns exactly the outputs its ONNX file publishes, so export is
``torch.onnx.export(module, (flux, weight))`` and nothing more.

* :class:`SpectrumVAE`: a 1-D convolutional variational autoencoder in the
  spirit of Sedaghat et al. (2021): strided convolutions to a latent mean and
  log-variance, an MLP decoder, and an in-graph anomaly score.
* :class:`LinearSpaceVAE`: the linear VAE (probabilistic PCA) of a narrow
  window space, published decoder-isometric.
* :class:`SpectrumClassifier`: a narrow VGG-like 1-D CNN in the spirit of
  Podsztavek & Skoda with a small deep ensemble of heads on a shared trunk,
  temperature-scaled probabilities and the ensemble's predictive entropy.
* :class:`VelocityScanner`: a chi-square scan over shifts in log-lambda with
  learned (k-means) rest-frame templates, in the spirit of GaSNet-III: coarse
  over the whole redshift range of each template kind, then fine with
  sub-pixel template phases and a parabola through the best three points.

The grid is a buffer-free attribute (``self.grid``): it travels into the
ONNX metadata, not into the graph.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from retrspect.ingest.preprocess import C_KMS

__all__ = [
    "LinearSpaceVAE",
    "SpectrumClassifier",
    "SpectrumVAE",
    "VelocityScanner",
    "encoder_input",
]

#: Normalised flux is clamped to this range before the networks see it.
INPUT_RANGE = (-1.0, 6.0)
#: Half-width (pixels) of the running mean that defines the line channel.
LINE_HALF_WINDOW = 25


def box_sum(x, half_window):
    """Sum over a centred box of 2 * half_window + 1 pixels (zero outside).

    Differences of a cumulative sum, accumulated in float64: O(n) instead
    of the O(n * box) of a pooling layer, and without the ~1e-4
    cancellation error a float32 cumulative sum over 2048 pixels has (torch
    and ONNX Runtime would then disagree by that much).
    """
    h = half_window
    c = torch.cumsum(F.pad(x.to(torch.float64), (h + 1, h)), dim=1)
    return (c[:, 2 * h + 1:] - c[:, : -(2 * h + 1)]).to(x.dtype)


def box_mean(x, covered, half_window):
    """Coverage-weighted running mean over 2 * half_window + 1 pixels."""
    return box_sum(x * covered, half_window) / box_sum(covered, half_window).clamp_min(0.5)


def encoder_input(flux, weight):
    """Three channels for the networks: flux, coverage, line depth.

    Parameters
    ----------
    flux, weight : Tensor, shape (batch, npix)

    Returns
    -------
    Tensor, shape (batch, 3, npix)
        ``(clamp(flux) - 1) * covered``; ``covered`` (1 where weight > 0);
        ``flux / running mean - 1`` (51 pixels, clamped to -1..3), which
        puts line depths - where gravity and metallicity show - on one
        scale whatever the continuum.
    """
    covered = (weight > 0).to(flux.dtype)
    clamped = flux.clamp(*INPUT_RANGE)
    centred = (clamped - 1.0) * covered
    continuum = box_mean(clamped, covered, LINE_HALF_WINDOW)
    ok = covered * (continuum > 0.02).to(flux.dtype)
    safe = torch.where(ok > 0, continuum, torch.ones_like(continuum))
    lines = ((clamped / safe - 1.0) * ok).clamp(-1.0, 3.0)
    return torch.stack([centred, covered, lines], dim=1)


class ConvTrunk(nn.Module):
    """Strided 1-D convolutions (each halves the length) and LeakyReLU."""

    def __init__(self, npix, channels=(8, 16, 32, 32, 64, 64),
                 kernels=(7, 5, 5, 5, 5, 5)):
        super().__init__()
        layers = []
        c_in = 3
        length = npix
        for c_out, k in zip(channels, kernels):
            layers += [nn.Conv1d(c_in, c_out, k, stride=2, padding=k // 2),
                       nn.LeakyReLU(0.1)]
            c_in = c_out
            length = (length + 1) // 2
        self.layers = nn.Sequential(*layers)
        self.out_features = c_in * length

    def forward(self, x):
        return self.layers(x).flatten(1)


class SpectrumVAE(nn.Module):
    """Convolutional VAE with an anomaly score computed in the graph.

    Parameters
    ----------
    npix : int
    latent_dim : int
    hidden : int
        Width of the encoder's fully connected layer.
    noise_floor : float
        Model-error floor (normalised flux units) added in quadrature to
        the noise in the anomaly score, so very high S/N spectra are not
        flagged for the VAE's own small imperfections.

    Notes
    -----
    ``forward`` returns ``(latent_mean, latent_logvar, reconstruction,
    anomaly)``: the latent mean and log-variance standardised per dimension
    with the training spectra's statistics (:meth:`standardise`, a fixed
    linear map, so L2 distances weigh dimensions alike); the reconstruction
    is decoded from the mean (deterministic),
    and ``anomaly`` is the mean over covered pixels of
    ``(flux - reconstruction)^2 / (sigma^2 + noise_floor^2)`` where sigma^2
    is ``1 / weight``, or, for a spectrum whose weights are all exactly 1
    (a file without errors, see :func:`ingest.preprocess.prepare`), the
    DER_SNR noise estimate (Stoehr et al. 2008) of its own flux.  NaN when
    no pixel is covered.
    """

    def __init__(self, npix, latent_dim=32, hidden=128, noise_floor=0.01):
        super().__init__()
        self.npix = npix
        self.latent_dim = latent_dim
        self.noise_floor = noise_floor
        self.trunk = ConvTrunk(npix)
        self.to_hidden = nn.Sequential(nn.Linear(self.trunk.out_features, hidden),
                                       nn.LeakyReLU(0.1))
        self.to_mean = nn.Linear(hidden, latent_dim)
        self.to_logvar = nn.Linear(hidden, latent_dim)
        # MLP decoder; the last step goes through a 128-d linear bottleneck
        # (reconstructions live in a learned 128-d basis of spectra, like
        # eigenspectra) to keep the file small.
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.LeakyReLU(0.1),
            nn.Linear(256, 512), nn.LeakyReLU(0.1),
            nn.Linear(512, 128), nn.Linear(128, npix))
        # The published latent is standardised: (mean - shift) / scale, with
        # shift and scale of the training spectra's posterior means (set by
        # standardise()); identity until then.
        self.register_buffer("latent_shift", torch.zeros(latent_dim))
        self.register_buffer("latent_scale", torch.ones(latent_dim))

    def encode(self, flux, weight):
        h = self.to_hidden(self.trunk(encoder_input(flux, weight)))
        return self.to_mean(h), self.to_logvar(h).clamp(-12.0, 6.0)

    def decode(self, latent):
        return 1.0 + self.decoder(latent)

    def anomaly(self, flux, weight, reconstruction):
        covered = (weight > 0).to(flux.dtype)
        n_covered = covered.sum(dim=1)
        # Files without errors come with weight exactly 1 on every covered pixel.
        no_errors = ((weight - 1.0).abs() * covered).amax(dim=1) == 0
        noise_var = der_snr_variance(flux, covered)
        var = torch.where(no_errors[:, None], noise_var[:, None],
                          1.0 / weight.clamp_min(1e-30))
        chi = (flux - reconstruction) ** 2 / (var + self.noise_floor ** 2) * covered
        score = chi.sum(dim=1) / n_covered.clamp_min(1.0)
        return torch.where(n_covered > 0, score, torch.full_like(score, float("nan")))

    def standardise(self, means, floor=0.05):
        """Set the published latent's shift and scale from training means.

        Parameters
        ----------
        means : Tensor (n, latent_dim)
            Posterior means (``encode``) of training spectra.
        floor : float
            Added in quadrature to each dimension's standard deviation, so
            an idle dimension (posterior = prior, mean ~ 0) is not blown up
            into unit-variance noise.
        """
        self.latent_shift.copy_(means.mean(0))
        self.latent_scale.copy_(torch.sqrt(means.var(0) + floor ** 2))

    def forward(self, flux, weight):
        mean, logvar = self.encode(flux, weight)
        reconstruction = self.decode(mean)
        published = (mean - self.latent_shift) / self.latent_scale
        published_logvar = logvar - 2.0 * torch.log(self.latent_scale)
        return (published, published_logvar, reconstruction,
                self.anomaly(flux, weight, reconstruction))


class LinearSpaceVAE(nn.Module):
    """Linear VAE (probabilistic PCA) for a narrow window space.

    A linear encoder and decoder are the VAE whose optimum is probabilistic
    PCA (Tipping & Bishop 1999; Lucas et al. 2019).  On a window of ~140
    pixels the features that tell near-twin stars apart are small-variance
    directions a convolutional VAE with a KL term discards, and that a
    per-dimension standardised latent would weigh like the main ones; here
    the model starts from the training spectra's principal components
    (:meth:`start_from_pca`), is trained as a VAE with the archive's
    augmentations (which shape the decoder's subspace), and is published
    decoder-isometric (:meth:`isometrise`): the L2 distance of two published
    latents is the L2 distance of the spectra's projections onto that
    subspace.  ``forward`` and the anomaly score are the
    :class:`SpectrumVAE`'s.
    """

    def __init__(self, npix, latent_dim=64, noise_floor=0.01):
        super().__init__()
        self.npix = npix
        self.latent_dim = latent_dim
        self.noise_floor = noise_floor
        # input: centred flux and the uncovered-pixel mask (so a gap is not
        # read as flux 1)
        self.to_mean = nn.Linear(2 * npix, latent_dim)
        # probabilistic PCA's posterior covariance is the same for every
        # spectrum: one learned log-variance per dimension
        self.logvar = nn.Parameter(torch.full((latent_dim,), -6.0))
        self.decoder = nn.Linear(latent_dim, npix)
        self.register_buffer("latent_shift", torch.zeros(latent_dim))
        self.register_buffer("latent_scale", torch.ones(latent_dim))

    def encode(self, flux, weight):
        x = encoder_input(flux, weight)
        mean = self.to_mean(torch.cat([x[:, 0], 1.0 - x[:, 1]], dim=1))
        return mean, self.logvar.expand_as(mean)

    def decode(self, latent):
        return 1.0 + self.decoder(latent)

    anomaly = SpectrumVAE.anomaly
    forward = SpectrumVAE.forward

    @torch.no_grad()
    def start_from_pca(self, flux, weight):
        """Set encoder and decoder to the leading principal components of
        the (prepared) training spectra's centred flux."""
        centred = encoder_input(flux, weight)[:, 0].to(torch.float64)
        mu = centred.mean(0)
        _, _, vt = torch.linalg.svd(centred - mu, full_matrices=False)
        basis = vt[:self.latent_dim]                      # (d, npix)
        self.to_mean.weight.zero_()
        self.to_mean.weight[:, :self.npix] = basis.to(self.to_mean.weight.dtype)
        self.to_mean.bias.copy_(-(basis @ mu))
        self.decoder.weight.copy_(basis.T)
        self.decoder.bias.copy_(mu)

    @torch.no_grad()
    def isometrise(self, flux, weight):
        """Publish the latent as coordinates of the projection onto the
        decoder's subspace, in an orthonormal basis of it.

        With the trained decoder ``W = U S V^T``, the decoder becomes ``U``
        and the encoder the orthogonal projection ``U^T (x - b)``: the
        posterior mean of probabilistic PCA with this decoder in its
        low-noise limit.  Distances of published latents are then exactly
        those of the spectra's projections.  The trained (denoising)
        encoder is not kept: its shrinkage of the low-variance directions
        is what loses near-twin stars in a noisy query (measured on
        ``halpha``: self-retrieval 0.76 with it, 0.94 with the projection).
        The log-variance is probabilistic PCA's ``sigma^2``: the training
        spectra's mean squared residual per covered pixel.

        Parameters
        ----------
        flux, weight : Tensor (n, npix)
            The training spectra as ingest prepares them.
        """
        u, _, _ = torch.linalg.svd(self.decoder.weight.to(torch.float64),
                                   full_matrices=False)
        dtype = self.decoder.weight.dtype
        self.decoder.weight.copy_(u.to(dtype))
        self.to_mean.weight.zero_()
        self.to_mean.weight[:, :self.npix] = u.T.to(dtype)
        self.to_mean.bias.copy_(-(u.T @ self.decoder.bias.to(torch.float64)).to(dtype))
        self.latent_shift.zero_()
        self.latent_scale.fill_(1.0)
        mean, _ = self.encode(flux, weight)
        covered = (weight > 0).to(flux.dtype)
        residual = ((self.decode(mean) - flux) ** 2 * covered).sum() / covered.sum()
        self.logvar.fill_(float(torch.log(residual.clamp_min(1e-12))))
        self.latent_shift.copy_(mean.mean(0))


def der_snr_variance(flux, covered):
    """Noise variance per spectrum from DER_SNR (Stoehr et al. 2008).

    ``sigma = 1.482602 / sqrt(6) * median |2 f_i - f_(i-2) - f_(i+2)|`` over
    every fourth pixel whose three samples are covered; the median is taken
    from the smallest half by ``topk`` (exportable to ONNX, and a partial
    sort: the median index never passes the middle).

    Returns
    -------
    Tensor, shape (batch,)
    """
    # every fourth pixel: a 512-point median is plenty and sorts 4x faster
    d = (2.0 * flux[:, 2:-2:4] - flux[:, :-4:4] - flux[:, 4::4]).abs()
    ok = covered[:, 2:-2:4] * covered[:, :-4:4] * covered[:, 4::4]
    big = torch.full_like(d, 3.0e38)
    values, _ = torch.topk(torch.where(ok > 0, d, big), (d.shape[1] + 1) // 2, dim=1,
                           largest=False, sorted=True)
    n_ok = ok.sum(dim=1)
    index = ((n_ok - 1.0).clamp_min(0.0) * 0.5).to(torch.int64)
    median = values.gather(1, index[:, None])[:, 0]
    median = torch.where(n_ok > 0, median, torch.ones_like(median))
    sigma = 0.6052697 * median
    return (sigma * sigma).clamp_min(1e-12)


class SpectrumClassifier(nn.Module):
    """VGG-like narrow 1-D CNN with an ensemble of heads and temperature.

    Parameters
    ----------
    npix : int
    n_classes : int
    heads : int
        Ensemble members sharing the trunk.
    min_coverage : float
        Below this fraction of covered pixels the probabilities are pulled to
        uniform (linearly from 1x to 0x this fraction): a spectrum that does
        not overlap the grid gets the maximum uncertainty, not a guess.

    Notes
    -----
    ``forward`` returns ``(probabilities, uncertainty)``: the mean of the
    heads' softmax(logits / T), and its entropy in nats (0 to ln n_classes).
    """

    def __init__(self, npix, n_classes=10, heads=4, hidden=128, dropout=0.2,
                 min_coverage=0.05, channels=(8, 16, 32, 32, 64, 64), aux_outputs=0):
        super().__init__()
        self.npix = npix
        self.n_classes = n_classes
        self.min_coverage = min_coverage
        self.trunk = ConvTrunk(npix, channels=tuple(channels))
        self.shared = nn.Sequential(nn.Dropout(dropout),
                                    nn.Linear(self.trunk.out_features, hidden),
                                    nn.LeakyReLU(0.1))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 64), nn.LeakyReLU(0.1),
                          nn.Linear(64, n_classes))
            for _ in range(heads))
        # training-only regression of stellar parameters from the shared
        # features (multi-task); not part of forward, so not exported
        self.aux = nn.Linear(hidden, aux_outputs) if aux_outputs else None
        self.register_buffer("temperature", torch.ones(()))

    def features(self, flux, weight):
        """Shared features, shape (batch, hidden)."""
        return self.shared(self.trunk(encoder_input(flux, weight)))

    def heads_logits(self, h):
        return torch.stack([head(h) for head in self.heads])

    def logits(self, flux, weight):
        """Per-head logits, shape (heads, batch, n_classes), before temperature."""
        return self.heads_logits(self.features(flux, weight))

    def forward(self, flux, weight):
        logits = self.logits(flux, weight) / self.temperature
        p = torch.softmax(logits, dim=-1).mean(dim=0)
        coverage = (weight > 0).to(flux.dtype).mean(dim=1, keepdim=True)
        gate = (coverage / self.min_coverage).clamp(0.0, 1.0)
        p = gate * p + (1.0 - gate) / self.n_classes
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=1)
        return p, entropy


class VelocityScanner(nn.Module):
    """Chi-square template scan over redshift in log-lambda, fully in-graph.

    The data are divided by a running-mean continuum (a box of
    ``2 * half_window + 1`` pixels, coverage-weighted) and compared with
    continuum-divided rest-frame templates: for a template t shifted by s
    pixels, the best amplitude a gives a chi-square reduction
    ``score(s) = max(0, sum w' r t_s)^2 / sum w' t_s^2`` (r = flux /
    continuum - 1, w' = weight * continuum^2).

    1. Coarse: data and templates summed over ``pool`` pixels; every template
       of every kind is scanned over its kind's shift range (stars: a few
       thousand km/s, galaxies: z up to ~0.5, QSOs: z up to ~5); the best
       (template, shift) wins and a parabola through its neighbours refines
       the shift.
    2. Lags: the winning template is scanned over +-``window`` grid pixels
       around that shift; a parabola refines again.
    3. Newton steps: at the nearest of ``phases`` sub-pixel template phases,
       fit ``a t_s + b dt/ds`` by least squares and move by ``b / a``
       (twice).  The phases are the template rebinned at fractional shifts,
       so pixelisation of an undersampled spectrum does not bias the shift.

    The error is the Cramer-Rao bound ``1 / sqrt(a^2 sum w' (dt/ds)^2)``,
    scaled by sqrt(reduced chi-square) (so a file without errors, weight 1,
    gets the scatter of its own residuals), with a systematic floor
    (``sys_kms``, calibrated on validation stars) added in quadrature.
    ``redshift`` and ``redshift_error`` are NaN when less than 5% of the
    grid is covered or no template correlates.

    Parameters
    ----------
    dlnl : float
        Pixel width in ln(lambda) of the grid.
    npix : int
    kinds : list of dict
        One per template kind: ``name``, ``coarse`` (Tensor [K, Lc]),
        ``fine`` (Tensor [K, phases, Lf]), ``s_min``/``s_max`` (coarse
        shifts; fine = pool * coarse), ``fine_offset`` (index in ``fine``
        of rest pixel 0).
    pool, phases, window, half_window : int
    sys_kms : float
    pixel_mask : array (npix,), optional
        0 where pixels are ignored (night-sky line residuals), else 1.
    """

    def __init__(self, dlnl, npix, kinds, *, pool=8, phases=4, window=4,
                 half_window=50, sys_kms=0.0, newton_steps=2, pixel_mask=None):
        super().__init__()
        # 0 at pixels never to be fitted (residuals of strong night-sky lines)
        self.register_buffer("pixel_mask", torch.ones(npix) if pixel_mask is None
                             else torch.as_tensor(pixel_mask, dtype=torch.float32))
        self.dlnl = float(dlnl)
        self.npix = int(npix)
        self.pool = int(pool)
        self.phases = int(phases)
        self.window = int(window)
        self.half_window = int(half_window)
        self.newton_steps = int(newton_steps)
        self.kind_names = [k["name"] for k in kinds]
        self.register_buffer("sys_kms", torch.tensor(float(sys_kms)))
        self.n_coarse = self.npix // self.pool
        self.n_kinds = len(kinds)
        table_template, table_shift, table_kind, table_edge = [], [], [], []
        flat, flat_d, base, lengths, offsets = [], [], [], [], []
        position = 0
        for n, kind in enumerate(kinds):
            coarse = torch.as_tensor(kind["coarse"], dtype=torch.float32)
            fine = torch.as_tensor(kind["fine"], dtype=torch.float32)
            k, length = coarse.shape
            n_shift = kind["s_max"] - kind["s_min"] + 1
            if length != self.n_coarse + n_shift - 1:
                raise ValueError(f"{kind['name']}: coarse templates have length "
                                 f"{length}, expected {self.n_coarse + n_shift - 1}")
            if tuple(fine.shape[:2]) != (k, self.phases):
                raise ValueError(f"{kind['name']}: fine templates have shape "
                                 f"{tuple(fine.shape)}, expected ({k}, {self.phases}, L)")
            self.register_buffer(f"coarse_{n}", coarse)
            flat.append(fine.reshape(-1))
            flat_d.append(shift_derivative(fine).reshape(-1))
            base.append(position)
            lengths.append(fine.shape[2])
            offsets.append(int(kind["fine_offset"]))
            position += fine.numel()
            # Flattened (template, j) -> template, coarse shift (s = s_max - j).
            for t in range(k):
                for j in range(n_shift):
                    table_template.append(t)
                    table_shift.append(kind["s_max"] - j)
                    table_kind.append(n)
                    table_edge.append(j == 0 or j == n_shift - 1)
        self.register_buffer("bank", torch.cat(flat))
        self.register_buffer("bank_derivative", torch.cat(flat_d))
        self.register_buffer("kind_base", torch.tensor(base, dtype=torch.int64))
        self.register_buffer("kind_length", torch.tensor(lengths, dtype=torch.int64))
        self.register_buffer("kind_offset", torch.tensor(offsets, dtype=torch.int64))
        self.register_buffer("table_template", torch.tensor(table_template, dtype=torch.int64))
        self.register_buffer("table_shift", torch.tensor(table_shift, dtype=torch.int64))
        self.register_buffer("table_kind", torch.tensor(table_kind, dtype=torch.int64))
        self.register_buffer("table_edge", torch.tensor(table_edge, dtype=torch.bool))
        self.register_buffer("pixels", torch.arange(self.npix))

    # -- pieces ------------------------------------------------------------

    def box_sum(self, x):
        """Sum over a centred box of 2 * half_window + 1 pixels."""
        return box_sum(x, self.half_window)

    def residuals(self, flux, weight):
        """Continuum-divided residual r and its inverse variance w'."""
        covered = (weight > 0).to(flux.dtype) * self.pixel_mask
        continuum = self.box_sum(flux * covered) / self.box_sum(covered).clamp_min(1.0)
        ok = covered * (continuum > 1e-3).to(flux.dtype)
        safe = torch.where(ok > 0, continuum, torch.ones_like(continuum))
        r = (flux / safe - 1.0) * ok
        w = weight * safe * safe * ok
        return r, w

    def coarse_scores(self, d1, d2):
        """Scores of every (template, coarse shift), flattened per sample."""
        out = []
        batch = d1.shape[0]
        for n in range(self.n_kinds):
            t = getattr(self, f"coarse_{n}")
            k = t.shape[0]
            num = F.conv1d(t[None], d1.repeat(k, 1)[:, None, :], groups=k)[0]
            den = F.conv1d((t * t)[None], d2.repeat(k, 1)[:, None, :], groups=k)[0]
            score = F.relu(num) ** 2 / den.clamp_min(1e-20)
            # (k * batch, n_shift) -> (batch, k * n_shift)
            out.append(score.reshape(k, batch, -1).transpose(0, 1).reshape(batch, -1))
        return torch.cat(out, dim=1)

    def template_rows(self, kind, template, phase, start, width, *,
                      derivative=False):
        """Template (or its shift derivative) at rest pixels start .. start + width - 1.

        Parameters
        ----------
        kind, template, phase, start : Tensor of int64, shape (batch,)
        width : int
        derivative : bool
            Rows of d(template shifted by s)/ds instead of the template.

        Returns
        -------
        Tensor, shape (batch, width)
            Zero outside the stored templates.
        """
        length = self.kind_length[kind]                              # (B,)
        row = self.kind_base[kind] + (template * self.phases + phase) * length
        index = (start + self.kind_offset[kind])[:, None] + torch.arange(width)[None, :]
        inside = (index >= 0) & (index < length[:, None])
        flat_index = row[:, None] + index.clamp_min(0).minimum(length[:, None] - 1)
        bank = self.bank_derivative if derivative else self.bank
        values = bank[flat_index]
        return torch.where(inside, values, torch.zeros((), dtype=values.dtype))

    @staticmethod
    def parabola(y0, y1, y2):
        """Offset of a parabola's vertex from the middle point (-0.5..0.5)."""
        bend = y0 - 2.0 * y1 + y2
        safe = torch.where(bend < 0, bend, torch.full_like(bend, -1e-20))
        return (0.5 * (y0 - y2) / safe).clamp(-0.5, 0.5), safe

    def forward(self, flux, weight):
        batch = flux.shape[0]
        dtype = flux.dtype
        r, w = self.residuals(flux, weight)
        wr = w * r
        n_used = self.n_coarse * self.pool
        d1 = wr[:, :n_used].reshape(batch, self.n_coarse, self.pool).sum(2)
        d2 = w[:, :n_used].reshape(batch, self.n_coarse, self.pool).sum(2)

        # 1. coarse scan over every template and its kind's shift range
        scores = self.coarse_scores(d1, d2)
        best = scores.argmax(dim=1)
        kind = self.table_kind[best]
        template = self.table_template[best]
        last = scores.shape[1] - 1
        up = scores.gather(1, (best - 1).clamp(0, last)[:, None])[:, 0]   # s + 1
        mid = scores.gather(1, best[:, None])[:, 0]
        down = scores.gather(1, (best + 1).clamp(0, last)[:, None])[:, 0]  # s - 1
        delta, _ = self.parabola(down, mid, up)
        delta = torch.where(self.table_edge[best], torch.zeros_like(delta), delta)
        s_coarse = (self.table_shift[best].to(dtype) + delta) * self.pool

        # 2. integer lags around it, phase 0
        centre = torch.round(s_coarse).to(torch.int64)
        zero = torch.zeros_like(centre)
        width = self.npix + 2 * self.window
        rows = self.template_rows(kind, template, zero, -centre - self.window, width)
        span = 2 * self.window + 1
        # lag j' is shift s = centre + W - j'; contiguous slices, not a
        # gathered (batch, span, npix) copy: a third of the model's time went there
        squared = rows * rows
        num = torch.stack([(rows[:, j:j + self.npix] * wr).sum(1) for j in range(span)], 1)
        den = torch.stack([(squared[:, j:j + self.npix] * w).sum(1) for j in range(span)], 1)
        curve = (F.relu(num) ** 2 / den.clamp_min(1e-20)).flip(1)   # now s = centre - W + i
        peak = curve.argmax(dim=1).clamp(1, span - 2)
        y0 = curve.gather(1, (peak - 1)[:, None])[:, 0]
        y1 = curve.gather(1, peak[:, None])[:, 0]
        y2 = curve.gather(1, (peak + 1)[:, None])[:, 0]
        delta, _ = self.parabola(y0, y1, y2)
        s = (centre - self.window + peak).to(dtype) + delta

        # 3. Newton steps on the sub-pixel phases: r ~ a m(s) + b dm/ds
        p = self.phases
        for step_number in range(self.newton_steps):
            quarter = torch.round(s * p).to(torch.int64)
            m0 = self.model_at(kind, template, quarter)
            dm = self.model_at(kind, template, quarter, derivative=True)
            a, b, fisher = self.linear_fit(m0, dm, wr, w)
            step = torch.where(a > 0, b / a.clamp_min(1e-20), torch.zeros_like(a))
            s = quarter.to(dtype) / p + step.clamp(-0.5, 0.5)
        z = torch.exp(s * self.dlnl) - 1.0

        # error: Cramer-Rao bound for the shift at the last step, scaled by
        # the reduced chi-square of that fit
        resid = r - a[:, None] * m0 - b[:, None] * dm
        chi2 = (w * resid * resid).sum(1)
        dof = ((w > 0).to(dtype).sum(1) - 3.0).clamp_min(1.0)
        sigma_pix = torch.sqrt(chi2 / dof / (a * a * fisher).clamp_min(1e-30))
        stat = (1.0 + z) * self.dlnl * sigma_pix
        sys = (1.0 + z) * self.sys_kms / C_KMS
        error = torch.sqrt(stat * stat + sys * sys)
        usable = ((w > 0).to(dtype).mean(1) > 0.05) & (a > 0)
        nan = torch.full_like(z, float("nan"))
        return torch.where(usable, z, nan), torch.where(usable, error, nan)

    def model_at(self, kind, template, quarter, *, derivative=False):
        """The template shifted by quarter / phases pixels, on the grid."""
        p = self.phases
        whole = torch.div(quarter, p, rounding_mode="floor")
        phase = quarter - whole * p
        return self.template_rows(kind, template, phase, -whole, self.npix,
                                  derivative=derivative)

    @staticmethod
    def linear_fit(m, dm, wr, w):
        """Weighted least squares of r on (m, dm): a, b and sum w dm^2."""
        smm = (w * m * m).sum(1)
        smd = (w * m * dm).sum(1)
        sdd = (w * dm * dm).sum(1)
        srm = (wr * m).sum(1)
        srd = (wr * dm).sum(1)
        det = (smm * sdd - smd * smd).clamp_min(1e-30)
        a = (srm * sdd - srd * smd) / det
        b = (srd * smm - srm * smd) / det
        return a, b, sdd - smd * smd / smm.clamp_min(1e-30)

    def kind_of(self, flux, weight):
        """Name of the winning template kind per spectrum (diagnostics)."""
        batch = flux.shape[0]
        r, w = self.residuals(flux, weight)
        n_used = self.n_coarse * self.pool
        d1 = (w * r)[:, :n_used].reshape(batch, self.n_coarse, self.pool).sum(2)
        d2 = w[:, :n_used].reshape(batch, self.n_coarse, self.pool).sum(2)
        best = self.coarse_scores(d1, d2).argmax(dim=1)
        return [self.kind_names[int(k)] for k in self.table_kind[best]]


def shift_derivative(fine):
    """d/ds of a template shifted by s pixels, from its sub-pixel phases.

    ``fine[k, q, i]`` is template k shifted by q / P pixels (q = 0..P-1),
    stored at rest index i.  The central difference between the
    neighbouring phases (q - 1 and q + 1, wrapping into the next whole
    pixel) over 2 / P pixels is the derivative of the model with respect
    to the shift at phase q.

    Parameters
    ----------
    fine : Tensor, shape (K, P, L)

    Returns
    -------
    Tensor, shape (K, P, L)
    """
    p = fine.shape[1]
    after = torch.cat([fine[:, 1:], F.pad(fine[:, :1], (1, 0))[..., :-1]], dim=1)
    before = torch.cat([F.pad(fine[:, -1:], (0, 1))[..., 1:], fine[:, :-1]], dim=1)
    return (after - before) * (p / 2.0)


def count_parameters(module):
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
