"""Layout: SDM VOTables, as DaCHS serves them.
"""
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.io.votable.exceptions import W50
from astropy.io.votable.tree import Field, Param, Resource, Table, VOTableFile

from retrspect.ingest.bundled import package_dir

TEMPLATES = package_dir("mangadap") / "data" / "spectral_templates"


MILES_M0001 = TEMPLATES / "miles" / "MILES_res2.50_star_m0001V.fits"


def write_sdm_votable(path, spectrum, *, with_utypes=True):
    """Write a spectrum as DaCHS does: SDM utypes, units and UCDs on FIELDs."""
    votable = VOTableFile()
    resource = Resource()
    votable.resources.append(resource)
    table = Table(votable)
    resource.tables.append(table)
    spec = "spec:Spectrum." if with_utypes else None
    wave_ucd = "em.wl;obs.atmos" if spectrum.medium == "air" else "em.wl"
    table.params.extend([
        Param(votable, name="targetName", datatype="char", arraysize="*",
              value=spectrum.meta["target_name"], utype="spec:Spectrum.Target.Name"),
        Param(votable, name="redshift", datatype="double", value=0.001,
              utype="spec:Spectrum.Target.Redshift"),
        Param(votable, name="location", datatype="double", arraysize="2",
              value=[10.5, -20.25], unit="deg",
              utype="spec:Spectrum.Char.SpatialAxis.Coverage.Location.Value"),
    ])
    # DaCHS writes "Angstrom", which VOUnit lists as deprecated (W50).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", W50)
        table.fields.extend(sdm_fields(votable, wave_ucd, spec))
    n = len(spectrum.wavelength)
    table.create_arrays(n)
    table.array["spectral"] = spectrum.wavelength.to_value(u.AA)
    table.array["flux"] = spectrum.flux.value
    table.array["flux_error"] = 0.01 * np.abs(spectrum.flux.value) + 1e-3
    votable.to_xml(str(path))


def sdm_fields(votable, wave_ucd, spec):
    return [
        Field(votable, name="spectral", datatype="double", unit="Angstrom",
              ucd=wave_ucd, utype=spec and spec + "Data.SpectralAxis.Value"),
        Field(votable, name="flux", datatype="double",
              unit="erg.s**-1.cm**-2.Angstrom**-1",
              ucd="phot.flux.density;em.wl",
              utype=spec and spec + "Data.FluxAxis.Value"),
        Field(votable, name="flux_error", datatype="double",
              unit="erg.s**-1.cm**-2.Angstrom**-1",
              ucd="stat.error;phot.flux.density;em.wl",
              utype=spec and spec + "Data.FluxAxis.Accuracy.StatError"),
    ]


@pytest.mark.parametrize("with_utypes", [True, False], ids=["utypes", "ucds"])
def test_sdm_votable_round_trip(tmp_path, with_utypes, read_one):
    original = read_one(MILES_M0001)
    # a VOTable named like a FITS file: the content decides
    path = tmp_path / "sdm.fits"
    write_sdm_votable(path, original, with_utypes=with_utypes)
    again = read_one(path)
    assert np.array_equal(again.flux.value, original.flux.value)
    assert np.allclose(again.wavelength.value, original.wavelength.value)
    assert again.flux.unit == u.erg / (u.s * u.cm**2 * u.AA)
    assert again.medium == "air"
    expected_error = 0.01 * np.abs(original.flux.value) + 1e-3
    assert np.allclose(again.ivar, 1 / expected_error**2)
    assert again.meta["target_name"] == "HD224930"
    assert again.meta["redshift"] == 0.001
    assert (again.meta["ra"], again.meta["dec"]) == (10.5, -20.25)


def test_sdm_votable_with_null_params_as_dachs_serves_it(tmp_path, read_one):
    """Issue 11: DaCHS writes unknown PARAMs as value="" (astropy reads an
    empty double[2] as [0, 0]) and unknown errors as empty cells; the
    resolving power comes from Resolution and Coverage.Location (metres)."""
    rows = "".join(f"<TR><TD>{4000 + i}</TD><TD>{1 + 0.01 * (i % 7)}</TD>"
                   "<TD></TD></TR>" for i in range(200))
    path = tmp_path / "getdata.vot"
    path.write_text(
        '<?xml version="1.0"?><VOTABLE version="1.4" '
        'xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE>'
        '<TABLE utype="spec:Spectrum">'
        '<PARAM datatype="float" name="ssa_redshift" value="" '
        'utype="spec:Spectrum.Target.Redshift"/>'
        '<PARAM arraysize="2" datatype="double" name="ssa_location" unit="deg" '
        'value="" utype="spec:Spectrum.Char.SpatialAxis.Coverage.Location.Value"/>'
        '<PARAM datatype="float" name="ssa_specmid" unit="m" value="4.1e-07" '
        'utype="spec:Spectrum.Char.SpectralAxis.Coverage.Location.Value"/>'
        '<PARAM datatype="float" name="ssa_specres" unit="m" value="2.05e-10" '
        'utype="spec:Spectrum.Char.SpectralAxis.Resolution"/>'
        '<PARAM arraysize="*" datatype="char" name="ssa_targname" value="HD 1" '
        'utype="spec:Spectrum.Target.Name"/>'
        '<FIELD datatype="double" name="spectral" ucd="em.wl" unit="Angstrom" '
        'utype="spec:Spectrum.Data.SpectralAxis.Value"/>'
        '<FIELD datatype="double" name="flux" '
        'utype="spec:Spectrum.Data.FluxAxis.Value"/>'
        '<FIELD datatype="double" name="flux_error" '
        'utype="spec:Spectrum.Data.FluxAxis.Accuracy.StatError"/>'
        f'<DATA><TABLEDATA>{rows}</TABLEDATA></DATA></TABLE></RESOURCE>'
        '</VOTABLE>')
    spectrum = read_one(path)
    assert spectrum.good.sum() == 200
    assert spectrum.ivar is None  # no error known at all: no error column
    assert (spectrum.meta["ra"], spectrum.meta["dec"]) == (None, None)
    assert spectrum.meta["redshift"] is None
    assert spectrum.meta["target_name"] == "HD 1"
    assert spectrum.meta["resolving_power"] == pytest.approx(2000.0, rel=1e-6)
    assert spectrum.medium == "vacuum"
