"""Header parsing: units.
"""

import astropy.units as u
import pytest

from retrspect.ingest.readers.headers import parse_unit

@pytest.mark.parametrize("text, unit", [
    ("erg /s /cm2 /angstroms", "erg / (s cm2 Angstrom)"),       # STELIB
    ("erg/cm2/s/A", "erg / (s cm2 Angstrom)"),                  # ESI: A is not Ampere
    ("1E-17 erg/cm^2/s/Ang", "1e-17 erg / (s cm2 Angstrom)"),   # SDSS
    ("erg s**(-1) cm**(-2) nm**(-1)", "erg / (s cm2 nm)"),      # ESO Phase 3
    ("DU/PIXEL", None),                                         # MagE: relative
])
def test_parse_unit(text, unit):
    assert parse_unit(text) == (None if unit is None else u.Unit(unit))
