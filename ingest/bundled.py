"""Real spectra that install offline with PyPI packages, and their catalogues.

``sdss-mangadap`` ships the MILES and STELIB stellar libraries, MaNGA spaxel
test spectra and one X-shooter Spectral Library star; ``linetools`` ships a
handful of real quasar and AGN spectra.  :func:`bundled_sources` lists them
(found with :func:`importlib.util.find_spec`, without importing the packages,
whose dependencies are not installed) and :func:`enrich` adds what the files
themselves do not say: names, MK types and stellar parameters from the MILES
catalogue, collection, object class, resolving power, the wavelength medium
each library documents.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import astropy.units as u
from astropy.coordinates import SkyCoord

from retrspect.ingest.readers import read_spectra
from retrspect.ingest.spectrum import Spectrum, make_obs_id, stem

__all__ = [
    "BundledSource",
    "LINETOOLS_SPECTRA",
    "bundled_sources",
    "enrich",
    "miles_catalogue",
    "package_dir",
]

#: MILES: FWHM 2.5 A everywhere (Falcon-Barroso et al. 2011), air wavelengths.
MILES_FWHM = 2.5 * u.AA
#: STELIB: about 3 A FWHM (Le Borgne et al. 2003), air wavelengths.
STELIB_FWHM = 3.0 * u.AA


@dataclass(frozen=True)
class LinetoolsSpectrum:
    """What linetools' test files do not say about the object they hold.

    Attributes
    ----------
    file : str
        File name under ``linetools/spectra/tests/files/``.
    obs_id : str
    collection : str
    object_class : str
    target_name : str or None
        None keeps the name from the header.
    medium : str
        Wavelength medium of the reduction pipeline.
    instrument : str or None
        None keeps the header's INSTRUME.
    redshift : float or None
    position : tuple or None
        ICRS degrees when the header has no usable target position.
    relative_flux : bool
        The header's BUNIT does not describe the values.
    """

    file: str
    obs_id: str
    collection: str
    object_class: str
    target_name: str | None = None
    medium: str = "vacuum"
    instrument: str | None = None
    redshift: float | None = None
    position: tuple | None = None
    relative_flux: bool = False


#: linetools' files that are genuine astronomical spectra the readers read.
#: Left out: UM184.dat.gz (ASCII copy of UM184_nF/nE), q0002m422.txt.gz
#: (ASCII), popler_sample.fits (a 10-pixel UVES_popler excerpt),
#: spec_example_2.fits (synthetic: constant 0.1 error on a 2000-2100 A grid),
#: specexample1.fits (181-pixel excerpt of unknown origin), the continuum
#: file SDSSJ..._c.fits, the error files *_e.fits / *_nE.fits (read with
#: their flux files), ascii_5columns.txt and guessexample.json.
LINETOOLS_SPECTRA = (
    # SDSS-III/BOSS plate-file extraction (VACUUM = T).  RA/DEC in the
    # header are the plate's boresight; the J-name gives the quasar.
    LinetoolsSpectrum("SDSSJ220248.31+123656.3.fits", "linetools_sdssj2202_1236",
                      "linetools-QSO", "qso", instrument="BOSS",
                      target_name="SDSSJ220248.31+123656.3"),
    # XQ-100 (Lopez et al. 2016) NIR arm: vacuum, heliocentric wavelengths.
    LinetoolsSpectrum("XShooter_XQ100.fits.gz", "linetools_xq100_j2349_3712",
                      "linetools-QSO", "qso"),
    # Keck/ESI, reduced with ESIRedux (vacuum wavelengths); PHL 957 is
    # Q0100+130 at z_em = 2.681.  BUNIT says erg/cm2/s/A but the values are
    # continuum-normalised (median 0.99; "opim div ... con_PH957_f.fits").
    LinetoolsSpectrum("PH957_f.fits", "linetools_phl957", "linetools-QSO", "qso",
                      target_name="PHL 957", instrument="ESI", redshift=2.681,
                      relative_flux=True),
    # Magellan/MagE, reduced with mage_pipe (vacuum wavelengths); the
    # README credits Fumagalli et al. (2013).
    LinetoolsSpectrum("UM184_nF.fits", "linetools_um184", "linetools-QSO", "qso",
                      instrument="MagE"),
    # FUSE SiC2A segment of the Seyfert 1.5 NGC 4151 (far UV: vacuum).  The
    # file has neither header keywords nor units; position and redshift
    # (cz = 995 km/s) from NED/SIMBAD.
    LinetoolsSpectrum("NGC4151sic2a.fits", "linetools_ngc4151_sic2a",
                      "linetools-AGN", "galaxy", target_name="NGC 4151",
                      instrument="FUSE", redshift=0.003319,
                      position=(182.635745, 39.405730)),
)


@dataclass(frozen=True)
class BundledSource:
    """One bundled file and how to complete its metadata.

    Attributes
    ----------
    collection : str
        e.g. "MILES", "STELIB", "MaNGA", "XSL", "linetools-QSO".
    path : Path
        The file inside the installed package.
    enrich : callable
        ``enrich(spectrum) -> Spectrum``: updates ``spectrum`` in place with
        the library's metadata and returns it.
    """

    collection: str
    path: Path
    enrich: Callable[[Spectrum], Spectrum]

    def read(self):
        """All spectra of the file, enriched.

        Returns
        -------
        list of Spectrum
        """
        return [self.enrich(spectrum) for spectrum in read_spectra(self.path)]


def package_dir(name):
    """Directory of an installed package, found without importing it.

    Parameters
    ----------
    name : str
        e.g. "mangadap".

    Returns
    -------
    Path

    Raises
    ------
    FileNotFoundError
        The package is not installed.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed; run "
                                "scripts/setup_python.sh (pip install --no-deps "
                                "sdss-mangadap linetools)")
    return Path(spec.submodule_search_locations[0])


def _templates_dir():
    return package_dir("mangadap") / "data" / "spectral_templates"


def _mangadap_tests_dir():
    return package_dir("mangadap") / "data" / "tests"


def _linetools_dir():
    return package_dir("linetools") / "spectra" / "tests" / "files"


# --------------------------------------------------------------------------
# MILES
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class MilesStar:
    """One row of ``paramsMILES_v9.1.txt``."""

    number: int
    name: str
    mk_type: str | None
    teff: float | None
    logg: float | None
    feh: float | None


# Column slices of the fixed-width catalogue, from its header line
# "Name  MILES  CaT  SpT  Teff  log g  [Fe/H]  Refs  Libraries".
_MILES_COLUMNS = {
    "name": slice(0, 18), "number": slice(22, 28), "mk_type": slice(35, 50),
    "teff": slice(50, 57), "logg": slice(57, 65), "feh": slice(65, 73),
}
# The catalogue prints HD044691A's MILES number as "022.".  m0221 is the only
# spectrum without a catalogue row, and the row sits between 0220 and 0222
# in the RA-ordered list.
_MILES_NUMBER_FIXES = {"022.": 221}


def _miles_number(text):
    text = text.strip()
    return _MILES_NUMBER_FIXES.get(text) or int(text)


def _catalogue_value(text):
    text = text.strip()
    return None if text in ("", "--") else float(text)


def _mk_type(text):
    """The catalogue's MK type; '07Ia'/'09Ib' have a zero for the letter O."""
    text = text.strip()
    if not text:
        return None
    return re.sub(r"^0(?=\d)", "O", text)


@lru_cache(maxsize=None)
def miles_catalogue(path=None):
    """Parse the MILES v9.1 parameter file.

    Parameters
    ----------
    path : str or Path, optional
        Defaults to ``miles/paramsMILES_v9.1.txt`` in sdss-mangadap.

    Returns
    -------
    dict of int to MilesStar
        Keyed by MILES number (m0272 -> 272); '--' gives None.
    """
    path = Path(path) if path else _templates_dir() / "miles" / "paramsMILES_v9.1.txt"
    stars = {}
    for line in path.read_text().splitlines()[3:]:
        if not line.strip():
            continue
        cells = {key: line[cut] for key, cut in _MILES_COLUMNS.items()}
        number = _miles_number(cells["number"])
        stars[number] = MilesStar(
            number=number,
            name=cells["name"].strip(),
            mk_type=_mk_type(cells["mk_type"]),
            teff=_catalogue_value(cells["teff"]),
            logg=_catalogue_value(cells["logg"]),
            feh=_catalogue_value(cells["feh"]),
        )
    return stars


def _centre(spectrum):
    wave = spectrum.wavelength.to(u.AA)
    return 0.5 * (wave[0] + wave[-1])


def enrich_miles(spectrum):
    """Add MILES catalogue data: name, MK type, Teff, log g, [Fe/H]."""
    match = re.search(r"_m(\d{4})V", Path(spectrum.source).name)
    if match is None:
        raise ValueError(f"{spectrum.source}: no MILES number in the file name")
    number = int(match.group(1))
    star = miles_catalogue().get(number)
    spectrum.medium = "air"
    spectrum.meta.update(
        obs_id=make_obs_id("miles", f"m{number:04d}"),
        collection="MILES",
        object_class="star",
        instrument="INT/IDS",
        resolving_power=float(_centre(spectrum) / MILES_FWHM),
    )
    if star is not None:
        spectrum.meta.update(target_name=star.name, mk_type=star.mk_type,
                             teff=star.teff, logg=star.logg, feh=star.feh)
    return spectrum


# --------------------------------------------------------------------------
# STELIB, XSL, MaNGA
# --------------------------------------------------------------------------

def enrich_stelib(spectrum):
    """STELIB: the header gives name, type, RV, position; set the rest.

    The reader already converts the header position (radians B1950, or
    sexagesimal B1950/J2000 strings, with STELIB's sign slip on small
    negative declinations corrected from the card comments) to ICRS.
    """
    name = re.sub(r"^STELIB_v[\d.]+_", "", stem(spectrum.source))
    spectrum.medium = "air"
    spectrum.meta.update(
        obs_id=make_obs_id("stelib", name),
        collection="STELIB",
        object_class="star",
        resolving_power=float(_centre(spectrum) / STELIB_FWHM),
    )
    return spectrum


def enrich_xsl(spectrum):
    """XSL: ESO X-shooter pipeline products are in air (ThAr air line list)."""
    spectrum.medium = "air"
    spectrum.meta.update(
        obs_id=make_obs_id("xsl", stem(spectrum.source).replace("xsl_spectrum_", "")),
        collection="XSL",
        object_class="star",
    )
    return spectrum


def enrich_manga(spectrum):
    """MaNGA spaxels: the reader already knows collection, class, redshift."""
    spectrum.meta.update(collection="MaNGA", object_class="galaxy")
    return spectrum


# --------------------------------------------------------------------------
# linetools
# --------------------------------------------------------------------------

def jname_position(name):
    """ICRS position from an IAU J-name such as SDSSJ220248.31+123656.3.

    Parameters
    ----------
    name : str

    Returns
    -------
    tuple of float or None
        (ra, dec) in degrees; None when the name has no J coordinates.
    """
    match = re.search(r"J(\d{2})(\d{2})(\d{2}(?:\.\d+)?)"
                      r"([+-])(\d{2})(\d{2})(\d{2}(?:\.\d+)?)", name)
    if match is None:
        return None
    hh, mm, ss, sign, dd, dm, ds = match.groups()
    coord = SkyCoord(f"{hh}h{mm}m{ss}s", f"{sign}{dd}d{dm}m{ds}s", frame="icrs")
    return float(coord.ra.deg), float(coord.dec.deg)


def _linetools_enricher(entry):
    def enrich_linetools(spectrum):
        meta = spectrum.meta
        spectrum.medium = entry.medium
        if entry.relative_flux:
            spectrum.flux = u.Quantity(spectrum.flux.value, u.dimensionless_unscaled)
        meta.update(
            obs_id=entry.obs_id,
            collection=entry.collection,
            object_class=entry.object_class,
        )
        if entry.target_name:
            meta["target_name"] = entry.target_name
        if entry.instrument:
            meta["instrument"] = entry.instrument
        if entry.redshift is not None:
            meta["redshift"] = entry.redshift
        # An explicit position, else the one a J-name encodes, beats the
        # header (which for the SDSS file is the plate's boresight).
        position = entry.position or jname_position(meta["target_name"] or "")
        if position is not None:
            meta["ra"], meta["dec"] = position
        return spectrum
    enrich_linetools.__doc__ = f"Metadata for linetools' {entry.file}."
    return enrich_linetools


# --------------------------------------------------------------------------
# The list and the dispatcher
# --------------------------------------------------------------------------

def bundled_sources():
    """Every bundled spectrum file, with the step that completes its metadata.

    Returns
    -------
    list of BundledSource
        MILES (984 files, ``miles/omit/`` excluded), STELIB (255), the two
        MaNGA test files (7 usable + 3 spaxels), the XSL star and five linetools
        spectra.

    Raises
    ------
    FileNotFoundError
        sdss-mangadap or linetools is not installed, or a listed file is
        missing from it.
    """
    templates = _templates_dir()
    # glob in miles/ only: miles/omit/ holds m0970, deliberately left out.
    miles = sorted((templates / "miles").glob("MILES_res2.50_star_m*V.fits"))
    sources = [BundledSource("MILES", path, enrich_miles) for path in miles]
    sources += [BundledSource("STELIB", path, enrich_stelib)
                for path in sorted((templates / "stelib").glob("STELIB_*.fits"))]
    tests = _mangadap_tests_dir()
    sources += [BundledSource("MaNGA", tests / name, enrich_manga)
                for name in ("MaNGA_test_spectra.fits.gz",
                             "MaNGA_multicomp_test_spectra.fits.gz")]
    sources.append(BundledSource("XSL", tests / "xsl_spectrum_X0360_uvb.fits",
                                 enrich_xsl))
    files = _linetools_dir()
    sources += [BundledSource(entry.collection, files / entry.file,
                              _linetools_enricher(entry))
                for entry in LINETOOLS_SPECTRA]
    missing = [str(source.path) for source in sources if not source.path.is_file()]
    if missing:
        raise FileNotFoundError(f"bundled spectra missing: {missing}")
    return sources


@lru_cache(maxsize=1)
def _sources_by_path():
    try:
        sources = bundled_sources()
    except FileNotFoundError:
        # Without the data packages no spectrum can come from them: an
        # archive's own files still go through enrich() unchanged.
        return {}
    return {str(source.path.resolve()): source for source in sources}


def enrich(spectrum):
    """Complete a spectrum's metadata if it comes from a bundled file.

    Updates ``spectrum`` in place (medium and meta) and returns it; spectra
    from any other file are returned unchanged, so ingest can call this on
    everything it reads.

    Parameters
    ----------
    spectrum : Spectrum

    Returns
    -------
    Spectrum
    """
    source = _sources_by_path().get(str(Path(spectrum.source).resolve()))
    if source is None:
        return spectrum
    return source.enrich(spectrum)
