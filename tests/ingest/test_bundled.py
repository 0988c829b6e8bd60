"""The bundled real spectra and their catalogue labels: retrspect.ingest.bundled.

Expected positions are SIMBAD's ICRS coordinates, quoted in the comments.
"""
import warnings
from collections import Counter

import astropy.units as u
import numpy as np
import pytest

from retrspect.ingest import bundled
from retrspect.ingest.bundled import bundled_sources, enrich, miles_catalogue, package_dir
from retrspect.ingest.readers import read_spectra
from retrspect.ingest.spectrum import estimate_snr

TEMPLATES = package_dir("mangadap") / "data" / "spectral_templates"


MILES_M0001 = TEMPLATES / "miles" / "MILES_res2.50_star_m0001V.fits"


def test_miles_star_wavelengths_and_catalogue(read_one):
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


def test_stelib_positions_match_simbad(read_one, separation_arcsec):
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


def test_stelib_radian_position_of_pi2_ori(read_one, separation_arcsec):
    # HD030739 = pi2 Ori (HR1544), radians B1950; SIMBAD ICRS
    # 04 50 36.72 +08 54 00.6.
    star = read_one(TEMPLATES / "stelib" / "STELIB_v3.2_HD030739.fits")
    assert separation_arcsec(star.meta, 72.653000, 8.900167) < 60
    assert star.wavelength[0].value == pytest.approx(3199.602)
    assert len(star.wavelength) == 6700


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


def test_enrich_leaves_other_files_alone(tmp_path, write_image):
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
