"""Tests of ``ingest.preprocess``: the model grid, rebinning, normalisation.

Synthetic spectra check the arithmetic against values worked out by hand;
real bundled spectra (MILES, MaNGA, linetools) check the cases archives
produce: no errors, inverse variances, masked pixels, no overlap.
"""
import math

import astropy.units as u
import numpy as np
import pytest

from retrspect.ingest.bundled import bundled_sources
from retrspect.ingest.preprocess import (
    MODEL_GRID,
    Grid,
    air_to_vacuum,
    prepare,
    prepare_arrays,
    prepare_batch,
    rebin,
)
from retrspect.ingest.spectrum import Spectrum, empty_meta


def make_spectrum(wave, flux, *, ivar=None, mask=None, medium="vacuum", **meta):
    """A validated Spectrum from plain arrays (wavelength in Angstrom)."""
    wave = np.asarray(wave, dtype=float)
    return Spectrum(
        wavelength=wave * u.AA,
        flux=np.asarray(flux, dtype=float) * u.dimensionless_unscaled,
        ivar=ivar,
        mask=np.zeros(wave.size, bool) if mask is None else mask,
        medium=medium,
        meta=empty_meta(**meta),
        source="synthetic",
    ).validate()


def gaussian_line(wave, centre, sigma, depth):
    return 1.0 - depth * np.exp(-0.5 * ((wave - centre) / sigma) ** 2)


@pytest.fixture(scope="module")
def real():
    """One spectrum of each bundled collection, by collection name."""
    found = {}
    for source in bundled_sources():
        if source.collection not in found:
            found[source.collection] = source.read()[0]
    return found


# --------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------

def test_grid_json_round_trip_and_wavelengths():
    grid = Grid.spanning(4000.0, 8000.0, 1001, resolving_power=1800.0)
    again = Grid.from_json(grid.to_json())
    assert again == grid
    assert grid.wavelength[0] == pytest.approx(4000.0)
    assert grid.wavelength[-1] == pytest.approx(8000.0)
    assert grid.wavelength.shape == (1001,)
    # constant velocity width: c ln(8000/4000) / 1000 pixels
    assert grid.velocity_step == pytest.approx(299792.458 * math.log(2) / 1000)
    edges = grid.edges
    assert edges.shape == (1002,)
    assert np.all(np.sqrt(edges[:-1] * edges[1:]) == pytest.approx(grid.wavelength))


def test_grid_from_json_without_resolving_power():
    grid = Grid.from_json('{"loglam_start": 3.6, "loglam_step": 0.0001, "npix": 100}')
    assert grid == Grid(3.6, 0.0001, 100)
    assert grid.resolving_power is None


@pytest.mark.parametrize("text", ['{"npix": 10}', "[1, 2]", "not json",
                                  '{"loglam_start": 3.6, "loglam_step": -1, "npix": 10}'])
def test_grid_from_json_refuses_garbage(text):
    with pytest.raises(ValueError):
        Grid.from_json(text)


def test_model_grid_is_what_the_models_were_built_for():
    # ONNX files carry their grid; this pins the default so a change is deliberate.
    assert MODEL_GRID.npix == 2048
    assert MODEL_GRID.wavelength[0] == pytest.approx(3600.0, abs=1e-3)
    assert MODEL_GRID.wavelength[-1] == pytest.approx(7400.0, abs=1e-3)
    assert MODEL_GRID.velocity_step == pytest.approx(105.5, abs=0.1)


# --------------------------------------------------------------------------
# Rebinning arithmetic
# --------------------------------------------------------------------------

def test_rebin_conserves_flux_of_a_line():
    # A narrow line sampled finely, rebinned to pixels 10x coarser: the
    # integral (equivalent width) is unchanged.
    wave = np.linspace(5000, 5100, 10001)
    flux = gaussian_line(wave, 5050.3, 0.4, 0.8)
    edges = np.linspace(5010, 5090, 81)
    out, coverage, var = rebin(wave, flux, np.ones(wave.size, bool), None, edges)
    ew_in = np.trapz(1 - flux, wave)
    ew_out = np.sum((1 - out) * np.diff(edges))
    assert ew_out == pytest.approx(ew_in, rel=1e-4)
    assert np.all(coverage == pytest.approx(1.0))
    assert var is None


def test_rebin_masked_pixels_are_excluded_not_interpolated():
    wave = np.arange(1000.0, 1100.0)
    flux = np.ones(wave.size)
    flux[40:60] = 1000.0                      # garbage, masked below
    good = np.ones(wave.size, bool)
    good[40:60] = False
    edges = np.arange(1000.5, 1099.0, 2.0)
    out, coverage, _ = rebin(wave, flux, good, None, edges)
    assert np.all(out[coverage > 0] == pytest.approx(1.0))
    assert np.all(coverage[(edges[1:] > 1041) & (edges[:-1] < 1058)] == 0.0)


def test_rebin_variance_of_averaged_white_noise():
    # 4 input pixels per output pixel: the variance of the mean is sigma^2/4,
    # checked against many noise realisations.
    rng = np.random.default_rng(1)
    wave = np.arange(2000.0) + 5000.0
    sigma = 0.1
    edges = np.arange(5100.5, 6800.0, 4.0)
    outs = []
    for _ in range(200):
        flux = 1.0 + rng.normal(0, sigma, wave.size)
        out, _, var = rebin(wave, flux, np.ones(wave.size, bool),
                            np.full(wave.size, sigma ** 2), edges)
        outs.append(out)
    empirical = np.var(np.array(outs), axis=0).mean()
    # the piecewise-linear interpolant also correlates neighbours: the
    # predicted sigma^2/4 is right within the 20% that costs.
    assert np.median(var) == pytest.approx(sigma ** 2 / 4)
    assert empirical == pytest.approx(sigma ** 2 / 4, rel=0.2)


# --------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------

def test_prepare_air_line_lands_at_its_vacuum_wavelength():
    # H-alpha at 6562.80 A in air is 6564.61 A in vacuum.
    grid = Grid.spanning(6400.0, 6700.0, 3001)
    wave = np.linspace(6300, 6800, 20001)
    spectrum = make_spectrum(wave, gaussian_line(wave, 6562.80, 1.0, 0.5), medium="air")
    flux, weight = prepare(spectrum, grid)
    depth = 1.0 - flux
    centroid = np.sum(depth * grid.wavelength) / np.sum(depth)
    expected = air_to_vacuum(6562.80 * u.AA).value
    assert expected == pytest.approx(6564.61, abs=0.01)
    assert centroid == pytest.approx(expected, abs=0.01)


def test_prepare_real_miles_star(real):
    spectrum = real["MILES"]
    flux, weight = prepare(spectrum, MODEL_GRID)
    assert flux.dtype == weight.dtype == np.float32
    assert flux.shape == weight.shape == (2048,)
    # MILES covers 3541-7412 A (vacuum), the whole grid; no errors -> weight 1
    assert np.all(weight == 1.0)
    assert np.median(flux) == pytest.approx(1.0, abs=1e-6)


def test_prepare_weight_is_inverse_variance_of_normalised_flux(real):
    spectrum = real["MaNGA"]
    flux, weight = prepare(spectrum, MODEL_GRID)
    covered = weight > 0
    assert 0.98 < covered.mean() < 1.0      # MaNGA starts at 3622 A
    assert not covered[0]
    # The normalised S/N per grid pixel is the file's S/N per pixel scaled
    # by sqrt(input pixels per grid pixel): MaNGA has 69 km/s pixels, the
    # grid 105.5 km/s.
    snr_grid = np.median(flux[covered] * np.sqrt(weight[covered]))
    good = spectrum.good
    snr_file = np.median(spectrum.flux.value[good] * np.sqrt(spectrum.ivar[good]))
    assert snr_grid == pytest.approx(snr_file * math.sqrt(105.5 / 69.0), rel=0.1)


def test_prepare_no_overlap_gives_zero_weight_no_nan(real):
    spectrum = real["linetools-AGN"]        # FUSE, 917-1005 A
    flux, weight = prepare(spectrum, MODEL_GRID)
    assert np.all(weight == 0) and np.all(flux == 0)


def test_prepare_nan_and_masked_pixels_never_leave():
    wave = np.linspace(3500, 7500, 4000)
    flux = np.ones(wave.size)
    flux[100:200] = np.nan
    mask = ~np.isfinite(flux)
    mask[1000:1100] = True
    ivar = np.full(wave.size, 100.0)
    ivar[2000:2050] = 0.0
    flux, weight = prepare(make_spectrum(wave, flux, ivar=ivar, mask=mask), MODEL_GRID)
    assert np.all(np.isfinite(flux)) and np.all(np.isfinite(weight))
    grid_wave = MODEL_GRID.wavelength
    hole = (grid_wave > wave[1005]) & (grid_wave < wave[1095])
    assert np.all(weight[hole] == 0) and np.all(flux[hole] == 0)
    assert np.all(flux[weight > 0] == pytest.approx(1.0))


def test_prepare_blurs_sharper_spectra_to_the_grid_resolution():
    grid = Grid.spanning(5000.0, 5200.0, 2001, resolving_power=2000.0)
    wave = np.linspace(4900, 5300, 40001)
    line = gaussian_line(wave, 5100.0, 0.2, 0.5)     # FWHM 0.47 A, R ~ 11000
    sharp, _ = prepare(make_spectrum(wave, line), grid)
    blurred, _ = prepare(make_spectrum(wave, line, resolving_power=11000.0), grid)

    def fwhm(flux):
        depth = 1 - flux
        return np.sum(depth > depth.max() / 2) * (grid.wavelength[1] - grid.wavelength[0])

    assert fwhm(sharp) == pytest.approx(0.47, abs=0.12)
    # sqrt(2.55^2 - 0.47^2 + 0.47^2) = 5100 / 2000
    assert fwhm(blurred) == pytest.approx(5100 / 2000, abs=0.12)
    assert np.sum(1 - blurred) == pytest.approx(np.sum(1 - sharp), rel=1e-3)


def test_prepare_batch_equals_prepare(real):
    spectra = list(real.values())
    flux, weight = prepare_batch(spectra, MODEL_GRID)
    assert flux.shape == (len(spectra), 2048)
    for row, spectrum in enumerate(spectra):
        f, w = prepare(spectrum, MODEL_GRID)
        assert np.array_equal(flux[row], f) and np.array_equal(weight[row], w)


def test_prepare_arrays_is_what_prepare_uses(real):
    from retrspect.ingest.preprocess import vacuum_wavelength
    spectrum = real["MaNGA"]
    direct = prepare_arrays(vacuum_wavelength(spectrum).value, spectrum.flux.value,
                            spectrum.good, spectrum.ivar, MODEL_GRID,
                            resolving_power=spectrum.meta["resolving_power"])
    assert all(np.array_equal(a, b) for a, b in zip(direct, prepare(spectrum, MODEL_GRID)))
