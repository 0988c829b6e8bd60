"""The single home of wavelength conventions, the model grids and normalisation.

Training (:mod:`models`) and ingest both import this module, so a model and
the archive that runs it can never disagree on how a spectrum is put onto the
grid.  Every shipped ONNX model carries its :class:`Grid` as JSON in its
metadata; :func:`prepare` turns any :class:`~ingest.spectrum.Spectrum` into
the ``(flux, weight)`` pair the model takes.

What :func:`prepare` does, in order:

1. wavelengths to vacuum Angstrom (:func:`vacuum_wavelength`);
2. flux-conserving rebinning onto the grid's log10-lambda pixels: the
   piecewise-linear interpolant of the good pixels is integrated exactly over
   each output pixel, so a finer input is averaged (keeping its S/N) and a
   coarser one is interpolated smoothly; masked pixels are excluded, not
   interpolated over;
3. resolution matching: when the grid names a resolving power and the
   spectrum's ``meta["resolving_power"]`` is higher, a Gaussian blur brings
   it down to the grid's (Podsztavek & Skoda's domain adaptation);
4. normalisation: division by the median of the covered pixels
   (:data:`NORMALISATION` is the text models carry in their metadata).

Nothing happens at import time apart from defining constants.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from astropy import constants
from astropy import units as u

__all__ = [
    "CLIP",
    "MIN_COVERAGE",
    "MIN_GRID_COVERAGE",
    "coverage_shortfall",
    "MODEL_GRID",
    "NORMALISATION",
    "Grid",
    "air_to_vacuum",
    "gaussian_blur",
    "grid_coverage",
    "normalise",
    "prepare",
    "prepare_arrays",
    "prepare_batch",
    "rebin",
    "vacuum_to_air",
    "vacuum_wavelength",
]

#: Speed of light in km/s (velocities are c*z, the non-relativistic
#: convention of stellar radial velocities).
C_KMS = constants.c.to_value(u.km / u.s)

#: An output pixel needs at least this fraction of its width covered by good
#: input pixels, else it gets weight 0.
MIN_COVERAGE = 0.5

#: Normalised flux is clipped to this range (cosmic rays, division by a tiny
#: median): the models never see values that would dominate a batch.
CLIP = (-10.0, 100.0)

#: How the flux and weight are normalised; models copy this text into their
#: ``retrspect.normalisation`` metadata.
NORMALISATION = (
    "vacuum wavelengths; flux-conserving rebin onto the grid (exact integral "
    "of the piecewise-linear interpolant of good pixels); Gaussian blur to the "
    "grid's resolving power when the spectrum's is higher; flux divided by the "
    "median of covered pixels (median of |flux| if that is <= 0), clipped to "
    "[-10, 100]; weight = inverse variance of the normalised flux (1 where "
    "the file has no errors); flux = weight = 0 where a pixel is less than "
    "half covered by good input pixels"
)


def air_to_vacuum(wavelength: u.Quantity) -> u.Quantity:
    """Convert air wavelengths to vacuum (IAU standard, Morton 1991 / Ciddor 1996).

    Parameters
    ----------
    wavelength : Quantity, shape (N,)
        Air wavelengths (any length unit).

    Returns
    -------
    Quantity, shape (N,)
        Vacuum wavelengths in the unit of the input.

    Notes
    -----
    Uses the refractive index of standard air from Ciddor (1996) in the form
    adopted by the IAU and SDSS; below 2000 A air and vacuum coincide by
    convention, so those values are returned unchanged.
    """
    unit = wavelength.unit
    air = wavelength.to_value(u.AA)
    sigma2 = (1e4 / air) ** 2
    n = (1.0 + 8.336624212083e-5
         + 2.408926869968e-2 / (1.301065924522e2 - sigma2)
         + 1.599740894897e-4 / (3.892568793293e1 - sigma2))
    vacuum = np.where(air > 2000.0, air * n, air)
    return (vacuum * u.AA).to(unit)


def vacuum_to_air(wavelength: u.Quantity) -> u.Quantity:
    """Inverse of :func:`air_to_vacuum` (to 1e-8 relative, by iteration).

    Parameters
    ----------
    wavelength : Quantity, shape (N,)
        Vacuum wavelengths (any length unit).

    Returns
    -------
    Quantity, shape (N,)
        Air wavelengths in the unit of the input.
    """
    vacuum = wavelength.to_value(u.AA)
    air = vacuum.copy()
    for _ in range(3):
        air = air * vacuum / air_to_vacuum(air * u.AA).value
    return (air * u.AA).to(wavelength.unit)


def vacuum_wavelength(spectrum) -> u.Quantity:
    """The spectrum's wavelengths in vacuum, in Angstrom, whatever the file gave."""
    wave = spectrum.wavelength.to(u.AA)
    if spectrum.medium == "air":
        return air_to_vacuum(wave)
    return wave


# --------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Grid:
    """A log10-lambda pixel grid in vacuum Angstrom.

    Pixel ``i`` is centred on ``10 ** (loglam_start + i * loglam_step)`` and
    extends half a step either side (in log10 lambda).

    Attributes
    ----------
    loglam_start : float
        log10 of the first pixel's central vacuum wavelength in Angstrom.
    loglam_step : float
        Pixel width in log10 lambda (a constant velocity width of
        ``c * ln(10) * loglam_step``).
    npix : int
        Number of pixels.
    resolving_power : float or None
        When set, spectra whose ``meta["resolving_power"]`` is higher are
        blurred to this resolving power; None leaves resolution alone.
    """

    loglam_start: float
    loglam_step: float
    npix: int
    resolving_power: float | None = None

    def __post_init__(self):
        if not (self.loglam_step > 0 and self.npix > 1 and self.loglam_start > 0):
            raise ValueError(f"not a valid grid: {self}")

    @classmethod
    def spanning(cls, start: float, stop: float, npix: int, *,
                 resolving_power: float | None = None) -> "Grid":
        """The grid of ``npix`` pixels centred from ``start`` to ``stop`` Angstrom."""
        lo, hi = math.log10(start), math.log10(stop)
        return cls(round(lo, 10), round((hi - lo) / (npix - 1), 12), int(npix),
                   resolving_power)

    @property
    def loglam(self) -> np.ndarray:
        """ndarray, shape (npix,): log10 of the pixel centres."""
        return self.loglam_start + self.loglam_step * np.arange(self.npix)

    @property
    def wavelength(self) -> np.ndarray:
        """ndarray, shape (npix,): pixel centres in vacuum Angstrom."""
        return 10.0 ** self.loglam

    @property
    def edges(self) -> np.ndarray:
        """ndarray, shape (npix + 1,): pixel edges in vacuum Angstrom."""
        return 10.0 ** (self.loglam_start
                        + self.loglam_step * (np.arange(self.npix + 1) - 0.5))

    @property
    def velocity_step(self) -> float:
        """Pixel width in km/s."""
        return C_KMS * math.log(10.0) * self.loglam_step

    def describe(self) -> str:
        """The grid's range as people read it, e.g. "3600-7400 A (vacuum)"."""
        wave = self.wavelength
        return f"{wave[0]:.0f}-{wave[-1]:.0f} A (vacuum)"

    def to_json(self) -> str:
        """The grid as a JSON object (what ONNX metadata carries)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Grid":
        """Inverse of :meth:`to_json`.

        Raises
        ------
        ValueError
            When the text is not a grid.
        """
        try:
            values = json.loads(text)
            return cls(loglam_start=float(values["loglam_start"]),
                       loglam_step=float(values["loglam_step"]),
                       npix=int(values["npix"]),
                       resolving_power=(None if values.get("resolving_power") is None
                                        else float(values["resolving_power"])))
        except (TypeError, KeyError, json.JSONDecodeError) as err:
            raise ValueError(f"not a grid: {text!r} ({err})") from err


#: The grid of all three shipped models: 3600-7400 A (vacuum), which MILES,
#: STELIB, MaNGA/SDSS and LAMOST all cover, in 2048 pixels of 105.5 km/s,
#: blurred to R = 2000 when a spectrum is sharper.  Ingest prepares each
#: spectrum once for all models.
MODEL_GRID = Grid.spanning(3600.0, 7400.0, 2048, resolving_power=2000.0)

#: A spectrum gets model outputs (latent, class, velocity, anomaly) only when
#: its good pixels cover at least this fraction of a model's grid.  Below it
#: a model would answer from padding: spectra that miss the grid entirely
#: all get the same latent.  The VAE's training cuts spectra down to about
#: 37% of the grid (``retrspect.models.observation.random_observation``),
#: so half the grid is inside what it learned; a SODA cutout of 80% of the
#: grid is embedded.
MIN_GRID_COVERAGE = 0.5


def grid_coverage(weight: np.ndarray) -> np.ndarray:
    """Fraction of the grid's pixels a prepared spectrum covers (weight > 0).

    Parameters
    ----------
    weight : ndarray, shape (..., npix)
        Weights from :func:`prepare` or :func:`prepare_batch`.

    Returns
    -------
    ndarray, shape (...)
    """
    return np.mean(np.asarray(weight) > 0, axis=-1)


def coverage_shortfall(what: str, coverage: float, grid: Grid,
                       minimum: float = MIN_GRID_COVERAGE,
                       frame: str = "observed") -> str | None:
    """Why ``what`` gets no model outputs on ``grid``, or None if it does."""
    if coverage >= minimum:
        return None
    rest = " (rest frame, shifted by its measured redshift)" if frame == "rest" else ""
    return (f"{what} covers {coverage:.0%} of the {grid.describe()} model "
            f"grid{rest}; at least {minimum:.0%} is needed for a latent "
            "vector, so it has no neighbours")



# --------------------------------------------------------------------------
# Rebinning, blur, normalisation
# --------------------------------------------------------------------------

@lru_cache(maxsize=16)
def _grid_edges(grid):
    """Pixel edges of a grid and their mid-points (cached, read-only)."""
    edges = grid.edges
    edges.flags.writeable = False
    return edges


def rebin(wavelength, flux, good, variance, edges):
    """Flux-conserving rebin of one spectrum onto pixels with given edges.

    The piecewise-linear interpolant of the good pixels (bad pixels count as
    zero with zero weight) is integrated exactly over each output pixel.

    Parameters
    ----------
    wavelength : ndarray, shape (N,)
        Strictly increasing input wavelengths (same unit as ``edges``).
    flux : ndarray, shape (N,)
    good : ndarray of bool, shape (N,)
    variance : ndarray, shape (N,), or None
        Variance of the flux at good pixels (ignored elsewhere); None when
        unknown.
    edges : ndarray, shape (M + 1,)
        Increasing output pixel edges.

    Returns
    -------
    flux : ndarray, shape (M,)
        Mean flux over the covered part of each output pixel (0 where none).
    coverage : ndarray, shape (M,)
        Fraction of each output pixel covered by good input (0 to 1).
    variance : ndarray, shape (M,), or None
        Variance of the rebinned flux: the mean input variance over the
        pixel divided by the number of input pixels averaged (at least 1).
    """
    x = np.asarray(wavelength, dtype=np.float64)
    # only the input pixels around the output range count: a window grid
    # then costs its own width, not the whole spectrum's
    first = max(int(np.searchsorted(x, edges[0], side="right")) - 1, 0)
    last = min(int(np.searchsorted(x, edges[-1], side="left")) + 1, x.size)
    if last - first >= 2 and (first > 0 or last < x.size):
        x, flux, good = x[first:last], flux[first:last], good[first:last]
        if variance is not None:
            variance = variance[first:last]
    rows = 2 if variance is None else 3
    y = np.zeros((rows, x.size))
    y[0] = good
    np.copyto(y[1], flux, where=good)
    if variance is not None:
        np.copyto(y[2], variance, where=good)
    # Cumulative integral of the piecewise-linear y at the input points ...
    step = np.diff(x)
    trapezoid = y[:, 1:] + y[:, :-1]
    trapezoid *= 0.5 * step
    cum = np.zeros_like(y)
    np.cumsum(trapezoid, axis=1, out=cum[:, 1:])
    # ... and at the output edges: edge e lies in input interval
    # [index, index + 1] at fraction frac (clipped outside the input).
    position = np.interp(edges, x, np.arange(x.size, dtype=np.float64))
    index = np.minimum(position.astype(np.intp), x.size - 2)
    frac = position - index
    h = step[index]
    y0 = np.take(y, index, axis=1)
    at = y0 + (0.5 * frac) * (np.take(y, index + 1, axis=1) - y0)
    at *= h * frac
    at += np.take(cum, index, axis=1)
    integral = np.diff(at, axis=1)
    covered = integral[0]
    coverage = covered / np.diff(edges)
    inverse = np.divide(1.0, covered, out=np.zeros_like(covered), where=covered > 0)
    mean_flux = integral[1] * inverse
    if variance is None:
        return mean_flux, coverage, None
    # Input pixels averaged into each output pixel: covered width over the
    # input pixel width there (at least one: an output pixel inside a single
    # input pixel has that pixel's variance).
    n_in = np.maximum(covered / h[:-1], 1.0)
    return mean_flux, coverage, integral[2] * inverse / n_in


def gaussian_blur(values, weight, sigma):
    """Weighted Gaussian smoothing of a regularly sampled array.

    Parameters
    ----------
    values, weight : ndarray, shape (..., M)
        Values and their weights (0 for missing pixels, which neither
        contribute nor get filled).
    sigma : float
        Gaussian sigma in pixels; below 0.1 the input is returned.

    Returns
    -------
    ndarray, shape (..., M)
    """
    if sigma < 0.1:
        return values
    half = max(1, int(math.ceil(4.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    taps /= taps.sum()
    present = (weight > 0).astype(np.float64)
    if values.ndim == 1:
        num = np.convolve(values * present, taps, "same")
        den = np.convolve(present, taps, "same")
    else:
        num = np.apply_along_axis(np.convolve, -1, values * present, taps, "same")
        den = np.apply_along_axis(np.convolve, -1, present, taps, "same")
    return np.where(present > 0, num / np.where(den > 0, den, 1.0), values)


def normalise(flux, weight, *, scale_weight=True):
    """Divide by the median of covered pixels; return flux, weight, scale.

    Parameters
    ----------
    flux : ndarray, shape (M,)
    weight : ndarray, shape (M,)
        Inverse variance of ``flux`` (0 = not covered).
    scale_weight : bool
        Scale the weight as an inverse variance (False when the weight is
        the 0/1 coverage of a spectrum without errors).

    Returns
    -------
    flux, weight : ndarray, shape (M,)
        Normalised flux (clipped to :data:`CLIP`) and its inverse variance.
    scale : float
        The divisor (0 when nothing usable is left, with weight all 0).
    """
    covered = weight > 0
    if not np.any(covered):
        return np.zeros_like(flux), np.zeros_like(weight), 0.0
    scale = float(np.median(flux[covered]))
    if not scale > 0:
        scale = float(np.median(np.abs(flux[covered])))
    if not (scale > 0 and np.isfinite(scale)):
        return np.zeros_like(flux), np.zeros_like(weight), 0.0
    flux = np.clip(flux / scale, *CLIP)
    if scale_weight:
        weight = weight * (scale * scale)
    return flux, weight, scale


def prepare_arrays(wavelength, flux, good, ivar, grid, *, resolving_power=None):
    """:func:`prepare` on plain arrays (vacuum Angstrom wavelengths).

    Training uses this on augmented copies of spectra; :func:`prepare` calls
    it on a :class:`~ingest.spectrum.Spectrum`.

    Parameters
    ----------
    wavelength : ndarray, shape (N,)
        Strictly increasing vacuum wavelengths in Angstrom.
    flux : ndarray, shape (N,)
    good : ndarray of bool, shape (N,)
    ivar : ndarray, shape (N,), or None
        Inverse variance (None: the file has no errors).
    grid : Grid
    resolving_power : float, optional
        The spectrum's resolving power, for resolution matching.

    Returns
    -------
    flux, weight : ndarray of float32, shape (grid.npix,)
    """
    wavelength = np.asarray(wavelength, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    good = np.asarray(good, dtype=bool) & np.isfinite(flux)
    variance = None
    if ivar is not None:
        ivar = np.asarray(ivar, dtype=np.float64)
        good &= np.isfinite(ivar) & (ivar > 0)
        variance = np.divide(1.0, ivar, out=np.zeros_like(ivar), where=good)
    if good.sum() < 2:
        zeros = np.zeros(grid.npix, dtype=np.float32)
        return zeros, zeros.copy()
    out_flux, coverage, out_var = rebin(wavelength, flux, good, variance,
                                        _grid_edges(grid))
    covered = coverage >= MIN_COVERAGE
    if out_var is None:
        weight = covered.astype(np.float64)
    else:
        weight = np.divide(1.0, out_var, out=np.zeros_like(out_var),
                           where=covered & (out_var > 0))
    if grid.resolving_power and resolving_power and resolving_power > grid.resolving_power:
        dlnl = math.log(10.0) * grid.loglam_step
        sigma = math.sqrt(grid.resolving_power ** -2 - resolving_power ** -2) / (
            2.0 * math.sqrt(2.0 * math.log(2.0)) * dlnl)
        out_flux = gaussian_blur(out_flux, weight, sigma)
    out_flux, weight, _ = normalise(np.where(weight > 0, out_flux, 0.0), weight,
                                    scale_weight=out_var is not None)
    bad = ~(np.isfinite(out_flux) & np.isfinite(weight))
    if np.any(bad):
        out_flux[bad] = 0.0
        weight[bad] = 0.0
    return out_flux.astype(np.float32), weight.astype(np.float32)


def prepare(spectrum, grid, redshift: float = 0.0):
    """Put one spectrum onto a model grid: vacuum, rebinned, normalised.

    Parameters
    ----------
    spectrum : Spectrum
        A validated spectrum from :mod:`ingest.readers`.
    grid : Grid
    redshift : float
        Read the spectrum in its rest frame: vacuum wavelengths are divided
        by ``1 + redshift`` first (0: as observed).  A redshift that is not
        a finite number > -1 gives no coverage (all weights 0).

    Returns
    -------
    flux : ndarray of float32, shape (grid.npix,)
        Normalised flux; 0 where the weight is 0.
    weight : ndarray of float32, shape (grid.npix,)
        Inverse variance of the normalised flux (1 where the file gives no
        errors); 0 where masked or outside the spectrum's coverage.  All
        zeros when the spectrum does not overlap the grid.
    """
    if not (math.isfinite(redshift) and redshift > -1):
        zeros = np.zeros(grid.npix, dtype=np.float32)
        return zeros, zeros.copy()
    wave = vacuum_wavelength(spectrum).value / (1.0 + redshift)
    good = spectrum.good
    ivar = spectrum.ivar
    return prepare_arrays(wave, spectrum.flux.value, good, ivar, grid,
                          resolving_power=spectrum.meta.get("resolving_power"))


def prepare_batch(spectra, grid, redshifts=None):
    """:func:`prepare` for several spectra.

    Parameters
    ----------
    spectra : sequence of Spectrum
    grid : Grid
    redshifts : sequence of float, optional
        Per spectrum, to read it in its rest frame (see :func:`prepare`).

    Returns
    -------
    flux, weight : ndarray of float32, shape (len(spectra), grid.npix)
    """
    flux = np.zeros((len(spectra), grid.npix), dtype=np.float32)
    weight = np.zeros_like(flux)
    for row, spectrum in enumerate(spectra):
        z = 0.0 if redshifts is None else float(redshifts[row])
        flux[row], weight[row] = prepare(spectrum, grid, z)
    return flux, weight
