"""From a row (file, reader index) to its spectrum: ingest.sources.

Regression tests for issue 11: the MaNGA test file drops its fully masked
row 5, so reader indices and list positions part after it; the archive
served row 7 as HTTP 500 and row 6 with row 7's flux.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from retrspect.ingest.bundled import bundled_sources
from retrspect.ingest.sources import read_source, served_arrays, spectrum_of_row
from retrspect.ingest.errors import ReaderError


@pytest.fixture(scope="module")
def manga_file() -> Path:
    return next(s.path for s in bundled_sources()
                if s.path.name == "MaNGA_test_spectra.fits.gz")


def test_every_index_of_a_file_with_a_dropped_row(manga_file):
    inputs, name = os.path.split(manga_file)
    spectra = read_source(str(manga_file))
    assert [s.index for s in spectra] == [0, 1, 2, 3, 4, 6, 7]
    for spectrum in spectra:
        found = spectrum_of_row(inputs, name, spectrum.index,
                                spectrum.meta["obs_id"])
        assert found.meta["obs_id"] == f"manga_test_spectra_{spectrum.index}"
        np.testing.assert_array_equal(found.flux.value, spectrum.flux.value)
    # the spectra after the gap are not their list neighbours
    six = spectrum_of_row(inputs, name, 6)
    assert not np.array_equal(six.flux.value, spectra[6].flux.value)
    np.testing.assert_array_equal(six.flux.value, spectra[5].flux.value)


def test_a_dropped_index_is_refused_with_the_indices_there(manga_file):
    inputs, name = os.path.split(manga_file)
    with pytest.raises(ReaderError, match=r"no spectrum with index 5 \(its "
                                          r"indices: \[0, 1, 2, 3, 4, 6, 7\]"):
        spectrum_of_row(inputs, name, 5)
    with pytest.raises(ReaderError, match="no spectrum with index 8"):
        spectrum_of_row(inputs, name, 8)


def test_a_row_whose_file_changed_is_refused(manga_file):
    inputs, name = os.path.split(manga_file)
    with pytest.raises(ReaderError, match="'manga_test_spectra_6', not the "
                                          "row's 'manga_test_spectra_7'"):
        spectrum_of_row(inputs, name, 6, "manga_test_spectra_7")


def test_served_arrays_are_vacuum_with_masked_pixels_nan(manga_file):
    spectrum = read_source(str(manga_file))[0]
    arrays = served_arrays(spectrum)
    assert np.isnan(arrays["flux"][spectrum.mask]).all()
    assert np.isfinite(arrays["flux"][~spectrum.mask]).all()
    # MaNGA wavelengths are vacuum already: served unchanged
    np.testing.assert_allclose(arrays["spectral"], spectrum.wavelength.value)
    good = ~spectrum.mask
    np.testing.assert_allclose(arrays["flux_error"][good],
                               1 / np.sqrt(spectrum.ivar[good]))
