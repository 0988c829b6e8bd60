"""Layout: CSV tables with units, and the CSV DaCHS serves.
"""

import astropy.units as u
import numpy as np
import pytest

from retrspect.ingest.readers import read_spectra
from retrspect.ingest.errors import ReaderError

def test_dachs_csv_states_units_in_comments(tmp_path, read_one):
    """The CSV DaCHS serves: units, medium and resolution in comments, a
    header without units, empty cells for unknown values."""
    lines = ["# accref = http://example.org/getproduct/x // Access key",
             "# ssa_specmid = 5.0e-07 // Midpoint",
             "# ssa_spectralucd = em.wl;obs.atmos // UCD of the spectral column",
             "# ssa_spectralunit = nm // Unit of the spectral column",
             "# ssa_fluxunit = erg.s**-1.cm**-2.Angstrom**-1 // Unit",
             "# ssa_specres = 2.5e-10 // Resolution",
             "spectral,flux,flux_error"]
    lines += [f"{400 + 0.1 * i},{2 + (i % 3)},{'' if i % 2 else 0.1}"
              for i in range(300)]
    path = tmp_path / "served.csv"
    path.write_text("\n".join(lines) + "\n")
    spectrum = read_one(path)
    assert spectrum.wavelength[0].to_value(u.AA) == pytest.approx(4000.0)
    assert spectrum.flux.unit == u.erg / (u.s * u.cm**2 * u.AA)
    assert spectrum.medium == "air"
    assert spectrum.meta["resolving_power"] == pytest.approx(2000.0)
    # every second error is unknown: those pixels are masked, not the rest
    assert spectrum.good.sum() == 150


def test_headerless_table_is_refused_with_what_to_do(tmp_path, assert_reader_error):
    path = tmp_path / "sdm.txt"
    path.write_text("".join(f"{4000 + i}\t{1.0 + i % 3}\tN/A\n"
                            for i in range(100)))
    assert_reader_error(path, "a table of numbers without a header")


def test_csv_with_units_in_the_header(tmp_path):
    path = tmp_path / "upload.csv"
    wave = np.linspace(4000, 5000, 50)
    lines = ["# medium: air",
             "wavelength [nm], flux [erg/s/cm2/Angstrom], error [erg/s/cm2/Angstrom]"]
    lines += [f"{w / 10:.4f}, {1 + 0.001 * i}, 0.05" for i, w in enumerate(wave)]
    path.write_text("\n".join(lines) + "\n")
    (spectrum,) = read_spectra(path)
    assert spectrum.medium == "air"
    np.testing.assert_allclose(spectrum.wavelength.to_value(u.AA), wave, rtol=1e-6)
    assert spectrum.flux.unit == u.erg / u.s / u.cm ** 2 / u.AA
    np.testing.assert_allclose(spectrum.ivar, 1 / 0.05 ** 2)


def test_csv_without_units_is_refused_with_a_reason(tmp_path):
    path = tmp_path / "nounits.csv"
    path.write_text("wavelength,flux\n" + "".join(f"{4000 + i},1\n" for i in range(20)))
    with pytest.raises(ReaderError, match="nounits.csv.*wavelength \\[unit\\]"):
        read_spectra(path)
    path.write_text("wavelength [kg],flux\n" + "".join(f"{4000 + i},1\n" for i in range(20)))
    with pytest.raises(ReaderError, match="not a length"):
        read_spectra(path)
