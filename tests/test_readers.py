"""Tests of the spectrum readers on real bundled spectra and written fixtures.

Real files come from the sdss-mangadap and linetools packages (see
``ingest.bundled``); SDSS spec-lite and LAMOST files are written here from
the published data models, with the flux of real bundled spectra.  Expected
positions are SIMBAD's ICRS coordinates, quoted in the comments.
"""

import gzip
import shutil
import warnings
from collections import Counter

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.votable.exceptions import W50
from astropy.io.votable.tree import Field, Param, Resource, Table, VOTableFile

from retrspect.ingest import bundled
from retrspect.ingest.bundled import bundled_sources, enrich, miles_catalogue, package_dir
from retrspect.ingest.readers import FORMATS, read_spectra
from retrspect.ingest.readers.headers import parse_unit
from retrspect.ingest.errors import ReaderError
from retrspect.ingest.spectrum import Spectrum, empty_meta, estimate_snr

TEMPLATES = package_dir("mangadap") / "data" / "spectral_templates"
MANGADAP_TESTS = package_dir("mangadap") / "data" / "tests"
LINETOOLS = package_dir("linetools") / "spectra" / "tests" / "files"
MILES_M0001 = TEMPLATES / "miles" / "MILES_res2.50_star_m0001V.fits"


def read_one(path):
    """Read a single-spectrum file and enrich it like ingest does."""
    spectra = read_spectra(path)
    assert len(spectra) == 1
    return enrich(spectra[0])


def separation_arcsec(meta, ra, dec):
    """Angle between a spectrum's position and (ra, dec), in arcsec."""
    here = SkyCoord(meta["ra"] * u.deg, meta["dec"] * u.deg)
    return here.separation(SkyCoord(ra * u.deg, dec * u.deg)).arcsec


# --------------------------------------------------------------------------
# Real files, one format each
# --------------------------------------------------------------------------

def test_miles_star_wavelengths_and_catalogue():
    spectrum = read_one(MILES_M0001)
    assert spectrum.wavelength.unit == u.AA
    assert len(spectrum.wavelength) == 4300
    assert spectrum.wavelength[0].value == pytest.approx(3540.5)
    assert spectrum.wavelength[-1].value == pytest.approx(7409.6)
    assert spectrum.medium == "air"
    assert spectrum.flux.unit == u.dimensionless_unscaled
    assert spectrum.ivar is None
    meta = spectrum.meta
    # paramsMILES_v9.1.txt: "HD224930  0001  673  G3 V  5305  4.49  -0.75"
    assert meta["obs_id"] == "miles_m0001"
    assert meta["target_name"] == "HD224930"
    assert meta["mk_type"] == "G3 V"
    assert (meta["teff"], meta["logg"], meta["feh"]) == (5305.0, 4.49, -0.75)
    assert meta["collection"] == "MILES" and meta["object_class"] == "star"
    # FWHM 2.5 A at the centre, (3540.5 + 7409.6) / 2 = 5475.05 A
    assert meta["resolving_power"] == pytest.approx(2190.02, abs=0.01)


def test_miles_catalogue_quirks():
    catalogue = miles_catalogue()
    assert len(catalogue) == 985  # 984 bundled stars + m0970 in omit/
    # HD098468 (m0407) has '--' for Teff, log g and [Fe/H]
    assert (catalogue[407].teff, catalogue[407].logg, catalogue[407].feh) == (
        None, None, None)
    # HD044691A is printed as "022."; it is m0221, the only star without a row
    assert catalogue[221].name == "HD044691A"
    assert catalogue[221].teff == 7950.0
    # HD057060 is printed "07Ia": the spectral class is O
    assert catalogue[251].mk_type == "O7Ia"
    # cluster stars: the "Cl" flag is not part of the name
    assert catalogue[970].name == "M71 X"


def test_stelib_positions_match_simbad():
    # Feige 110, SIMBAD ICRS 23 19 58.40 -05 09 56.2.  The header's radian
    # DEC is -4.556 deg (sign applied to the degrees only); the card comment
    # "-5 26 37" (B1950) is right.
    feige = read_one(TEMPLATES / "stelib" / "STELIB_v3.2_Feige110.fits")
    assert separation_arcsec(feige.meta, 349.993333, -5.165611) < 60
    # Vega (HD172167), SIMBAD ICRS 18 36 56.336 +38 47 01.28; a sexagesimal
    # B1950 header from the JKT run.
    vega = read_one(TEMPLATES / "stelib" / "STELIB_v3.2_HD172167.fits")
    assert separation_arcsec(vega.meta, 279.234735, 38.783689) < 60
    assert vega.meta["target_name"] == "HR7001"
    assert vega.meta["mk_type"] == "A0V"
    assert vega.meta["rv"] == -6.1
    assert vega.meta["teff"] == 9520.0
    assert vega.meta["obs_id"] == "stelib_hd172167"
    assert vega.medium == "air"
    assert vega.flux.unit == u.erg / (u.s * u.cm**2 * u.AA)
    # Unobserved pixels are filled with 0 and must be masked.
    zero = vega.flux.value == 0
    assert zero.sum() == 5149
    assert np.array_equal(vega.mask, zero)


def test_stelib_radian_position_of_pi2_ori():
    # HD030739 = pi2 Ori (HR1544), radians B1950; SIMBAD ICRS
    # 04 50 36.72 +08 54 00.6.
    star = read_one(TEMPLATES / "stelib" / "STELIB_v3.2_HD030739.fits")
    assert separation_arcsec(star.meta, 72.653000, 8.900167) < 60
    assert star.wavelength[0].value == pytest.approx(3199.602)
    assert len(star.wavelength) == 6700


def test_xq100_phase3_table_in_angstrom():
    spectrum = read_one(LINETOOLS / "XShooter_XQ100.fits.gz")
    assert spectrum.wavelength.unit == u.AA
    assert len(spectrum.wavelength) == 9771
    # TDMIN1/TDMAX1 = 981.7513 / 1823.4998 nm
    assert spectrum.wavelength[0].value == pytest.approx(9817.513, abs=1e-2)
    assert spectrum.wavelength[-1].value == pytest.approx(18234.998, abs=1e-2)
    assert spectrum.flux.unit == u.erg / (u.s * u.cm**2 * u.nm)
    assert spectrum.ivar is not None and spectrum.medium == "vacuum"
    assert spectrum.meta["target_name"] == "BR J2349-3712"
    assert spectrum.meta["resolving_power"] == 5300.0
    assert spectrum.meta["date_obs"] == pytest.approx(56215.01080095)
    assert separation_arcsec(spectrum.meta, 357.306532, -37.21662) < 1
    # the pipeline's own figure: SNR = 21.67 (average per pixel)
    assert estimate_snr(spectrum) == pytest.approx(21.67, rel=0.1)


def test_xsl_table_of_scalar_rows():
    spectrum = read_one(MANGADAP_TESTS / "xsl_spectrum_X0360_uvb.fits")
    assert len(spectrum.wavelength) == 17140
    assert spectrum.wavelength[0].value == pytest.approx(2989.044, abs=1e-2)
    assert spectrum.medium == "air"
    assert spectrum.meta["target_name"] == "BD+012916"
    assert spectrum.meta["resolving_power"] == pytest.approx(9994.64, abs=0.01)
    assert spectrum.meta["obs_id"] == "xsl_x0360_uvb"


def test_manga_spaxels_and_redshifts():
    path = MANGADAP_TESTS / "MaNGA_test_spectra.fits.gz"
    spectra = [enrich(s) for s in read_spectra(path)]
    # Row 5 is flagged DONOTUSE on every pixel and is left out.
    assert [s.index for s in spectra] == [0, 1, 2, 3, 4, 6, 7]
    assert [s.meta["redshift"] for s in spectra] == pytest.approx(
        [0.0495282, 0.050231, 0.04935, 0.027447, 0.030805, 0.0171611, 0.0181699])
    assert all(s.meta["object_class"] == "galaxy" for s in spectra)
    assert all(s.medium == "vacuum" and len(s.wavelength) == 4563 for s in spectra)
    assert spectra[0].flux.unit == u.Unit("1e-17 erg / (s cm2 Angstrom)")
    assert spectra[0].meta["obs_id"] == "manga_test_spectra_0"
    # SRES at the pixel nearest the middle of 3621.6-10353.8 A (6987.7 A)
    assert spectra[0].meta["resolving_power"] == pytest.approx(2038.83, abs=0.01)
    multicomp = read_spectra(MANGADAP_TESTS / "MaNGA_multicomp_test_spectra.fits.gz")
    assert [s.meta["redshift"] for s in multicomp] == pytest.approx(
        [0.0312591, 0.134659, 0.0236603])


def test_split_flux_and_error_files():
    spectrum = read_one(LINETOOLS / "PH957_f.fits")
    assert spectrum.ivar is not None
    error = fits.getdata(LINETOOLS / "PH957_e.fits").astype(float)
    good = error > 0
    assert np.allclose(spectrum.ivar[good], 1 / error[good] ** 2)
    assert np.all(spectrum.mask[~good])
    # DC-FLAG = 1: CRVAL1 = 3.58109715864 is log10 of the first wavelength
    assert spectrum.wavelength[0].value == pytest.approx(10 ** 3.58109715864)
    # PHL 957, SIMBAD ICRS 01 03 11.27 +13 16 17.7 (header: B1950 FK4 strings)
    assert separation_arcsec(spectrum.meta, 15.796958, 13.271583) < 60
    assert spectrum.flux.unit == u.dimensionless_unscaled  # continuum-normalised
    with pytest.raises(ReaderError, match="error array of PH957_f.fits"):
        read_spectra(LINETOOLS / "PH957_e.fits")


def test_log_linear_wcs_matches_linetools_ascii_copy():
    spectrum = read_one(LINETOOLS / "UM184_nF.fits")
    # linetools ships the same spectrum as text (wave, flux, sigma)
    with gzip.open(LINETOOLS / "UM184.dat.gz", "rt") as stream:
        reference = np.loadtxt(stream)
    assert np.allclose(spectrum.wavelength.value, reference[:, 0], atol=2e-3)
    good = reference[:, 2] > 0
    assert np.allclose(1 / np.sqrt(spectrum.ivar[good]), reference[good, 2], rtol=1e-4)
    assert spectrum.meta["target_name"] == "UM184"


@pytest.mark.parametrize("path", [
    TEMPLATES / "mastarhc_v2" / "MaStarHC_00.fits.gz",
    TEMPLATES / "mastar_ssp_v1.0" / "MaStar-SSP-A00.003-Z+0.00.fits.gz"])
def test_mastar_wave_log_axis_is_log10_angstrom(path):
    """mangadap's MaStar files say CTYPE1 = 'WAVE-LOG' but hold
    log10(lambda / A) in CRVAL1/CDELT1 (3.5589, 1e-4), without CUNIT1."""
    header = fits.getheader(path)
    spectrum = read_spectra(path)[0]
    expected = 10 ** (header["CRVAL1"]
                      + header["CDELT1"] * np.arange(header["NAXIS1"]))
    assert np.allclose(spectrum.wavelength.to_value(u.AA), expected, rtol=1e-12)
    assert 3600 < spectrum.wavelength[0].to_value(u.AA) < 3650
    assert spectrum.wavelength[-1].to_value(u.AA) > 10000


def test_fits_wave_log_axis_with_a_unit_stays_greisen(tmp_path):
    """A WAVE-LOG axis that states its unit is the FITS standard's
    lambda = CRVAL1 * exp(CDELT1 * p / CRVAL1), also below 5 units."""
    npix, crval, cdelt = 500, 4.5e-7, 1e-10
    path = tmp_path / "wavelog.fits"
    hdu = fits.PrimaryHDU(np.ones(npix, np.float32) + 0.01 * np.arange(npix))
    hdu.header.update(CTYPE1="WAVE-LOG", CUNIT1="m", CRVAL1=crval,
                      CDELT1=cdelt, CRPIX1=1.0)
    hdu.writeto(path)
    spectrum = read_spectra(path)[0]
    expected = crval * np.exp(cdelt * np.arange(npix) / crval)
    assert np.allclose(spectrum.wavelength.to_value(u.m), expected, rtol=1e-12)


def test_linetools_sdss_plate_spectrum():
    spectrum = read_one(LINETOOLS / "SDSSJ220248.31+123656.3.fits")
    assert len(spectrum.wavelength) == 4646
    assert spectrum.wavelength[0].value == pytest.approx(10 ** 3.5507)
    assert spectrum.medium == "vacuum"
    assert spectrum.flux.unit == u.Unit("1e-17 erg / (s cm2 Angstrom)")
    assert spectrum.meta["date_obs"] == 55831.0
    # The header RA/DEC is the plate boresight; the position is the J-name's.
    assert separation_arcsec(spectrum.meta, 330.701292, 12.615639) < 0.1
    assert spectrum.meta["object_class"] == "qso"


def test_gzip_fits_without_gz_suffix(tmp_path):
    path = tmp_path / "spectrum.dat"
    with open(MILES_M0001, "rb") as source, gzip.open(path, "wb") as target:
        shutil.copyfileobj(source, target)
    spectrum = read_spectra(path)[0]
    assert len(spectrum.wavelength) == 4300
    assert spectrum.medium == "air"


# --------------------------------------------------------------------------
# SDM VOTable
# --------------------------------------------------------------------------

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
def test_sdm_votable_round_trip(tmp_path, with_utypes):
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


def test_sdm_votable_with_null_params_as_dachs_serves_it(tmp_path):
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


def test_dachs_csv_states_units_in_comments(tmp_path):
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


def test_headerless_table_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "sdm.txt"
    path.write_text("".join(f"{4000 + i}\t{1.0 + i % 3}\tN/A\n"
                            for i in range(100)))
    assert_reader_error(path, "a table of numbers without a header")


def test_sdm_fits_resolution_from_spec_res_and_spec_val(tmp_path):
    """DaCHS's SDM FITS: SPEC_RES is a resolution and SPEC_VAL the centre,
    both in metres; ESO's SPEC_RES (a resolving power) is unaffected."""
    wave = np.linspace(4000.0, 6000.0, 500)
    columns = [fits.Column(name="spectral", format="D", array=wave,
                           unit="Angstrom"),
               fits.Column(name="flux", format="D", array=np.ones(500) + wave
                           * 1e-4),
               fits.Column(name="flux_error", format="D",
                           array=np.full(500, np.nan))]
    table = fits.BinTableHDU.from_columns(columns)
    table.header.update({"TUTYP1": "spec:spectrum.data.spectralaxis.value",
                         "TUTYP2": "spec:spectrum.data.fluxaxis.value",
                         "TUTYP3": "spec:spectrum.data.fluxaxis.accuracy."
                                   "staterror",
                         "SPEC_VAL": 5.0e-7, "SPEC_RES": 2.5e-10,
                         "VOCLASS": "Spectrum-1.0"})
    path = tmp_path / "sdm.fits"
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    spectrum = read_one(path)
    assert spectrum.meta["resolving_power"] == pytest.approx(2000.0)
    assert spectrum.good.sum() == 500 and spectrum.ivar is None


# --------------------------------------------------------------------------
# SDSS spec-lite and LAMOST fixtures, from their data models
# --------------------------------------------------------------------------

def manga_spaxel():
    """A real galaxy spectrum on a 1e-4 dex vacuum grid, as BOSS uses."""
    spectra = read_spectra(MANGADAP_TESTS / "MaNGA_test_spectra.fits.gz")
    return spectra[0]


def write_spec_lite(path, spectrum):
    """spec-PLATE-MJD-FIBERID.fits after the SDSS DR17 data model.

    HDU0: header only (PLATEID, MJD, FIBERID, PLUG_RA, PLUG_DEC ...);
    HDU1 COADD: flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model;
    HDU2 SPECOBJ: one row of the spAll/specObj columns;
    HDU3 SPZLINE: emission-line fits.
    """
    n = len(spectrum.wavelength)
    primary = fits.PrimaryHDU()
    primary.header.update(TELESCOP="SDSS 2.5-M", PLATEID=266, MJD=51630,
                          FIBERID=3, PLUG_RA=146.71420, PLUG_DEC=-1.0413043,
                          RADECSYS="FK5", EQUINOX=2000.0)
    and_mask = np.zeros(n, dtype=np.int32)
    and_mask[100:110] = 2 ** 23  # BRIGHTSKY
    coadd = fits.BinTableHDU.from_columns([
        fits.Column("flux", "E", array=spectrum.flux.value),
        fits.Column("loglam", "E", array=np.log10(spectrum.wavelength.value)),
        fits.Column("ivar", "E", array=np.where(spectrum.mask, 0, spectrum.ivar)),
        fits.Column("and_mask", "J", array=and_mask),
        fits.Column("or_mask", "J", array=and_mask),
        fits.Column("wdisp", "E", array=np.full(n, 1.1)),
        fits.Column("sky", "E", array=np.zeros(n)),
        fits.Column("model", "E", array=spectrum.flux.value),
    ], name="COADD")
    specobj = fits.BinTableHDU.from_columns([
        fits.Column("PLATE", "J", array=[266]),
        fits.Column("MJD", "J", array=[51630]),
        fits.Column("FIBERID", "J", array=[3]),
        fits.Column("PLUG_RA", "D", array=[146.71420]),
        fits.Column("PLUG_DEC", "D", array=[-1.0413043]),
        fits.Column("Z", "E", array=[0.0495282]),
        fits.Column("Z_ERR", "E", array=[1e-5]),
        fits.Column("CLASS", "6A", array=["GALAXY"]),
        fits.Column("SUBCLASS", "21A", array=[""]),
        fits.Column("INSTRUMENT", "4A", array=["SDSS"]),
        fits.Column("SPECOBJID", "19A", array=["299489677444933632"]),
        fits.Column("BESTOBJID", "19A", array=["1237648720693755918"]),
    ], name="SPECOBJ")
    spzline = fits.BinTableHDU.from_columns([
        fits.Column("LINENAME", "13A", array=["H_alpha"]),
        fits.Column("LINEWAVE", "D", array=[6564.61]),
    ], name="SPZLINE")
    fits.HDUList([primary, coadd, specobj, spzline]).writeto(path)


def test_sdss_spec_lite(tmp_path):
    spaxel = manga_spaxel()
    path = tmp_path / "spec-0266-51630-0003.fits"
    write_spec_lite(path, spaxel)
    spectrum = read_one(path)
    assert spectrum.medium == "vacuum"
    assert np.allclose(spectrum.wavelength.value, spaxel.wavelength.value, rtol=1e-6)
    assert np.allclose(spectrum.flux.value, spaxel.flux.value)
    assert spectrum.flux.unit == u.Unit("1e-17 erg / (s cm2 Angstrom)")
    assert np.all(spectrum.mask[100:110])  # and_mask set
    meta = spectrum.meta
    assert meta["obs_id"] == "sdss_0266_51630_0003"
    assert (meta["ra"], meta["dec"]) == (146.71420, -1.0413043)
    assert meta["target_name"] == "SDSS J094651.40-010228.6"
    assert meta["redshift"] == pytest.approx(0.0495282)
    assert meta["object_class"] == "galaxy"
    assert meta["date_obs"] == 51630.0
    # wdisp 1.1 pixels of 1e-4 dex: R = 1 / (ln 10 * 1e-4 * 1.1 * 2.3548)
    assert meta["resolving_power"] == pytest.approx(1676.6, abs=0.5)


def stelib_on_lamost_grid():
    """A real STELIB star's flux on LAMOST's log-linear grid (3.5682 + 1e-4 i)."""
    star = read_spectra(TEMPLATES / "stelib" / "STELIB_v3.2_HD002857.fits")[0]
    loglam = 3.5682 + 1e-4 * np.arange(3909)
    flux = np.interp(10**loglam, star.wavelength.value, star.flux.value / 1e-15)
    ivar = np.full(flux.size, 2500.0) / np.maximum(flux, 1e-3) ** 2
    return loglam, flux, ivar


LAMOST_HEADER = dict(TELESCOP="LAMOST", OBSID=101008,
                     DESIG="LAMOST J003154.91-051616.2", OBJNAME="HD2857",
                     RA=7.978792, DEC=-5.271167, CLASS="STAR", SUBCLASS="A2",
                     Z=-0.00048, MJD=56258, VACUUM=True)


def check_lamost(spectrum, loglam, flux):
    assert spectrum.medium == "vacuum"
    assert np.allclose(spectrum.wavelength.value, 10**loglam, rtol=1e-6)
    assert np.allclose(spectrum.flux.value, flux, rtol=1e-6)
    assert spectrum.flux.unit == u.dimensionless_unscaled
    assert np.all(spectrum.mask[200:220])
    meta = spectrum.meta
    assert meta["obs_id"] == "lamost_101008"
    assert meta["target_name"] == "LAMOST J003154.91-051616.2"
    assert (meta["ra"], meta["dec"]) == pytest.approx((7.978792, -5.271167))
    assert meta["object_class"] == "star"
    assert meta["redshift"] == -0.00048
    assert meta["date_obs"] == 56258.0


def test_lamost_dr5_table(tmp_path):
    loglam, flux, ivar = stelib_on_lamost_grid()
    andmask = np.zeros(flux.size, dtype=np.int32)
    andmask[200:220] = 1
    primary = fits.PrimaryHDU()
    primary.header.update(LAMOST_HEADER)
    primary.header.comments["RA"] = "Right Ascension of object (J2000, deg)"
    n = flux.size
    coadd = fits.BinTableHDU.from_columns([
        fits.Column("FLUX", f"{n}E", array=[flux]),
        fits.Column("IVAR", f"{n}E", array=[ivar]),
        fits.Column("WAVELENGTH", f"{n}E", array=[10**loglam]),
        fits.Column("ANDMASK", f"{n}E", array=[andmask]),
        fits.Column("ORMASK", f"{n}E", array=[andmask]),
    ], name="COADD")
    path = tmp_path / "spec-56258-HD2857_sp01-003.fits.gz"
    fits.HDUList([primary, coadd]).writeto(path)
    check_lamost(read_one(path), loglam, flux)


def test_lamost_dr1_image(tmp_path):
    loglam, flux, ivar = stelib_on_lamost_grid()
    andmask = np.zeros(flux.size)
    andmask[200:220] = 1
    image = np.vstack([flux, ivar, 10**loglam, andmask, andmask]).astype(np.float32)
    primary = fits.PrimaryHDU(image)
    primary.header.update(LAMOST_HEADER)
    primary.header.update(COEFF0=3.5682, COEFF1=1e-4, CRVAL1=3.5682, CD1_1=1e-4,
                          CRPIX1=1, CTYPE1="LINEAR", **{"DC-FLAG": 1})
    path = tmp_path / "spec-56258-HD2857_sp01-003.fits"
    primary.writeto(path)
    check_lamost(read_one(path), loglam, flux)


# --------------------------------------------------------------------------
# Broken inputs
# --------------------------------------------------------------------------

def write_image(path, flux, **cards):
    hdu = fits.PrimaryHDU(np.asarray(flux, dtype=np.float32))
    hdu.header.update(cards)
    hdu.writeto(path)
    return path


def assert_reader_error(path, phrase):
    with pytest.raises(ReaderError) as caught:
        read_spectra(path)
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert phrase in caught.value.reason
    return caught.value


def test_truncated_fits(tmp_path):
    path = tmp_path / "truncated.fits"
    path.write_bytes(MILES_M0001.read_bytes()[:20000])
    assert_reader_error(path, "truncated")


def test_truncated_gzip_fits(tmp_path):
    # Cut inside the SPECTRUM extension of the real XQ-100 file.
    path = tmp_path / "truncated.fits.gz"
    path.write_bytes((LINETOOLS / "XShooter_XQ100.fits.gz").read_bytes()[:100000])
    assert_reader_error(path, "truncated or corrupt gzip file")


def test_text_file_named_fits(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("wavelength flux\n4000 1.0\n")
    assert_reader_error(path, "not a FITS file, VOTable, or CSV")


def test_missing_file(tmp_path):
    assert_reader_error(tmp_path / "absent.fits", "no such file")


def test_nan_flux(tmp_path):
    path = write_image(tmp_path / "nan.fits", np.full(100, np.nan),
                       CRVAL1=4000.0, CDELT1=1.0, CRPIX1=1)
    assert_reader_error(path, "flux is all NaN")


def test_zero_flux(tmp_path):
    path = write_image(tmp_path / "zero.fits", np.zeros(100),
                       CRVAL1=4000.0, CDELT1=1.0, CRPIX1=1)
    assert_reader_error(path, "flux is all zero")


def test_image_without_wavelength(tmp_path):
    path = write_image(tmp_path / "nowcs.fits", np.ones(100), CDELT1=1.0)
    assert_reader_error(path, "no wavelength information")


def test_table_with_mismatched_lengths(tmp_path):
    table = fits.BinTableHDU.from_columns([
        fits.Column("WAVE", "100E", unit="nm", array=[np.linspace(400, 500, 100)]),
        fits.Column("FLUX", "90E", array=[np.ones(90)]),
    ], name="SPECTRUM")
    path = tmp_path / "mismatch.fits"
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    assert_reader_error(path, "array lengths differ: wavelength 100, flux 90")


def test_decreasing_wavelength(tmp_path):
    path = write_image(tmp_path / "reversed.fits", np.ones(100),
                       CRVAL1=5000.0, CDELT1=-1.0, CRPIX1=1)
    assert_reader_error(path, "not strictly increasing")


def test_too_few_good_pixels(tmp_path):
    flux = np.zeros(100)
    flux[:5] = 1.0
    path = write_image(tmp_path / "sparse.fits", flux, CRVAL1=4000.0, CDELT1=1.0)
    assert_reader_error(path, "only 5 good pixels")


def test_fits_in_no_known_layout(tmp_path):
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.ones((3, 4, 5), dtype=np.float32)).writeto(path)
    assert_reader_error(path, "no known spectrum layout")


def test_negative_ivar_is_refused():
    spectrum = read_spectra(MANGADAP_TESTS / "MaNGA_test_spectra.fits.gz")[0]
    spectrum.ivar = spectrum.ivar.copy()
    spectrum.ivar[10] = -1.0
    with pytest.raises(ReaderError, match="ivar has negative values"):
        spectrum.validate()


# --------------------------------------------------------------------------
# Signal-to-noise
# --------------------------------------------------------------------------

def synthetic(noise_sigma, with_ivar, seed=1):
    rng = np.random.default_rng(seed)
    wave = np.linspace(4000.0, 9000.0, 5000)
    continuum = 100.0 * (1 + 0.3 * np.sin(wave / 700.0))  # smooth, varying
    flux = continuum + rng.normal(0.0, noise_sigma, wave.size)
    ivar = np.full(wave.size, noise_sigma**-2.0) if with_ivar else None
    return Spectrum(wave * u.AA, flux * u.dimensionless_unscaled, ivar,
                    np.zeros(wave.size, bool), "vacuum", empty_meta()).validate()


@pytest.mark.parametrize("with_ivar", [True, False], ids=["ivar", "der_snr"])
def test_estimate_snr(with_ivar):
    spectrum = synthetic(5.0, with_ivar)
    expected = np.median(spectrum.flux.value) / 5.0  # about 20
    assert estimate_snr(spectrum) == pytest.approx(expected, rel=0.1)


# --------------------------------------------------------------------------
# The bundled data: the ingest smoke test
# --------------------------------------------------------------------------

def test_every_bundled_spectrum_reads():
    sources = bundled_sources()
    counts, obs_ids = Counter(), Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for source in sources:
            spectra = source.read()
            assert spectra, source.path
            counts[source.collection] += len(spectra)
            for spectrum in spectra:
                obs_ids[spectrum.meta["obs_id"]] += 1
                assert spectrum.meta["collection"] == source.collection
                assert spectrum.meta["object_class"] in ("star", "galaxy", "qso")
                assert np.isfinite(estimate_snr(spectrum))
    assert sum(counts.values()) >= 1250
    assert counts == {"MILES": 984, "STELIB": 255, "MaNGA": 10, "XSL": 1,
                      "linetools-QSO": 4, "linetools-AGN": 1}
    assert max(obs_ids.values()) == 1, "obs_id must be unique"
    assert not any("omit" in str(source.path) for source in sources)


def test_enrich_leaves_other_files_alone(tmp_path):
    path = write_image(tmp_path / "plain.fits", np.ones(50) + np.arange(50),
                       CRVAL1=4000.0, CDELT1=1.0, OBJECT="test star")
    spectrum = read_spectra(path)[0]
    before = dict(spectrum.meta)
    assert enrich(spectrum) is spectrum
    assert spectrum.meta == before
    assert spectrum.meta["obs_id"] == "plain"
    assert spectrum.meta["target_name"] == "test star"


def test_enrich_updates_in_place():
    spectrum = read_spectra(MILES_M0001)[0]
    assert spectrum.meta["collection"] is None
    bundled.enrich(spectrum)
    assert spectrum.meta["collection"] == "MILES"


@pytest.mark.parametrize("text, unit", [
    ("erg /s /cm2 /angstroms", "erg / (s cm2 Angstrom)"),       # STELIB
    ("erg/cm2/s/A", "erg / (s cm2 Angstrom)"),                  # ESI: A is not Ampere
    ("1E-17 erg/cm^2/s/Ang", "1e-17 erg / (s cm2 Angstrom)"),   # SDSS
    ("erg s**(-1) cm**(-2) nm**(-1)", "erg / (s cm2 nm)"),      # ESO Phase 3
    ("DU/PIXEL", None),                                         # MagE: relative
])
def test_parse_unit(text, unit):
    assert parse_unit(text) == (None if unit is None else u.Unit(unit))


def test_registry_names_are_unique():
    names = [fmt.name for fmt in FORMATS]
    assert len(names) == len(set(names))


# --------------------------------------------------------------------------
# Image layouts no bundled file uses
# --------------------------------------------------------------------------

def test_single_row_image(tmp_path):
    flux = 1.0 + 0.1 * np.sin(np.arange(300) / 10.0)
    path = write_image(tmp_path / "row.fits", flux[np.newaxis, :], CRVAL1=5000.0,
                       CDELT1=0.5, CRPIX1=1, CTYPE1="AWAV", CUNIT1="Angstrom")
    spectrum = read_one(path)
    assert spectrum.wavelength[-1].value == pytest.approx(5000.0 + 299 * 0.5)
    assert spectrum.medium == "air"
    assert np.allclose(spectrum.flux.value, flux, rtol=1e-6)


def test_iraf_multispec_planes(tmp_path):
    # apall output: bands spectrum / raw / background / sigma, one aperture,
    # dispersion in WAT2 (linear, 4000 A + 1.5 A per pixel, z = 0).
    n = 200
    flux = 50.0 + np.arange(n) * 0.1
    sigma = np.full(n, 2.0)
    cube = np.stack([flux, flux, np.zeros(n), sigma])[:, np.newaxis, :]
    path = write_image(
        tmp_path / "multispec.fits", cube, CTYPE1="MULTISPE", CTYPE2="MULTISPE",
        WAT0_001="system=multispec",
        WAT1_001="wtype=multispec label=Wavelength units=angstroms",
        WAT2_001='wtype=multispec spec1 = "1 1 0 4000. 1.5 200 0. 10.0 20.0"',
        BANDID1="spectrum - background fit, weights variance, clean no",
        BANDID2="raw - background fit, weights none, clean no",
        BANDID3="background - background fit", BANDID4="sigma - background fit")
    spectrum = read_one(path)
    assert spectrum.wavelength[0].value == 4000.0
    assert spectrum.wavelength[-1].value == pytest.approx(4000.0 + 199 * 1.5)
    assert np.allclose(spectrum.ivar, 0.25)


# --------------------------------------------------------------------------
# CSV tables (what a user uploads for search by example)
# --------------------------------------------------------------------------

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
