"""Spectrum readers: one entry point, one registry of file layouts.

:func:`read_spectra` opens a file, recognises its layout from its *content*
(FITS structure, header keywords, column names and utypes, VOTable field
utypes and UCDs; never the file name's extension) and returns validated
:class:`~ingest.spectrum.Spectrum` objects.  Anything that goes wrong becomes a
:class:`~ingest.spectrum.ReaderError` naming the file and the problem, so a
batch import can report a bad file and carry on.

Layouts live in :data:`FORMATS`, tried in order; supporting a new one means
writing a sniff and a read function and adding one :class:`Format` entry.
Header cards are read in one place, :func:`scan_header`, once per HDU.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
import struct
import threading
import warnings
import zlib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from xml.parsers import expat
from xml.parsers.expat import ExpatError

import astropy.units as u
import numpy as np
from astropy.coordinates import FK4, FK5, ICRS, SkyCoord
from astropy.io import fits
from astropy.io import votable
from astropy.io.votable.exceptions import VOWarning
from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.time import Time
from astropy.utils.exceptions import AstropyWarning
from erfa import ErfaWarning

from ingest.spectrum import (
    ReaderError,
    Spectrum,
    check_lengths,
    empty_meta,
    make_obs_id,
    stem,
)

__all__ = [
    "FORMATS",
    "Format",
    "HeaderInfo",
    "read_spectra",
    "scan_header",
    "to_icrs",
]

#: SDSS, BOSS, MaNGA and the linetools SDSS file give flux in these units.
SDSS_FLUX_UNIT = u.Unit("1e-17 erg / (s cm2 Angstrom)")

#: LAMOST's low-resolution survey, R ~ 1800 at 5500 A (LAMOST data release
#: documentation); the files do not state it.
LAMOST_RESOLVING_POWER = 1800.0

# Phrases of astropy warnings that mean the file is cut short or damaged;
# every other warning raised while opening concerns header conformance,
# which scan_header deals with card by card.
_CORRUPT_FITS = (
    "File may have been truncated",
    "Header size is not multiple of 2880",
    "the file is corrupted",
)

# Exceptions astropy and numpy raise on malformed input.  Readers turn them
# into ReaderError; nothing else is caught.  Hostile and fuzzed files showed
# the less obvious ones: astropy's tile decompression raises RuntimeError on
# a table shorter than its header says, its Column validators raise
# AssertionError (a TTYPE too long for a card), a mangled header can leave
# struct unpacking or an array allocation failing, and float conversions
# overflow.
_DATA_ERRORS = (KeyError, ValueError, IndexError, TypeError, OSError,
                EOFError, VerifyError, u.UnitsError, RuntimeError,
                AssertionError, struct.error, zlib.error, ArithmeticError,
                MemoryError)
# What opening a FITS file or parsing a VOTable may raise on a bad file
# (LookupError: an XML declaration naming an unknown encoding; VOWarning:
# astropy raises some VOTable warnings, e.g. W12 for a FIELD without name
# or ID, as exceptions even with verify="ignore").
_OPEN_ERRORS = _DATA_ERRORS + (ExpatError, LookupError, VOWarning)


def _describe_error(exc):
    """An exception as words for a reason: the message, else the type."""
    text = str(exc).strip()
    if isinstance(exc, MemoryError):
        return f"needs more memory than is available ({text or 'MemoryError'})"
    if isinstance(exc, KeyError) or not text:
        return f"{type(exc).__name__}: {text}"
    return text

# linetools ships some spectra as a flux file and an error file side by side.
_FLUX_ERROR_SUFFIXES = (("_f", "_e"), ("_nF", "_nE"), ("_F", "_E"))


# --------------------------------------------------------------------------
# Headers: the single loop over cards
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class HeaderInfo:
    """The cards of one FITS header, parsed once into plain dicts.

    Attributes
    ----------
    values : dict of str to object
        Keyword (upper case) to value; the first card wins when a keyword is
        repeated (STELIB repeats EXTEND, popler files repeat CDELT1).
    comments : dict of str to str
        Keyword to the card's comment (STELIB keeps the sexagesimal position
        only there).
    """

    values: dict = field(default_factory=dict)
    comments: dict = field(default_factory=dict)

    def __contains__(self, key):
        return key in self.values

    def get(self, key, default=None):
        """Raw value of a keyword, or ``default``."""
        return self.values.get(key, default)

    def text(self, *keys):
        """First of ``keys`` with a non-empty string value, stripped, else None."""
        for key in keys:
            value = self.values.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    def number(self, *keys):
        """First of ``keys`` whose value is a finite number, else None.

        Numeric strings count ('3.2'); placeholders such as '-' or '--' and
        booleans do not.
        """
        for key in keys:
            value = self.values.get(key)
            if isinstance(value, bool) or value is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if np.isfinite(number):
                return number
        return None

    def flag(self, *keys):
        """First of ``keys`` holding a boolean (T/F, 'TRUE', 'yes'), else None."""
        for key in keys:
            value = self.values.get(key)
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                word = value.strip().lower()
                if word in ("t", "true", "yes", "y", "1"):
                    return True
                if word in ("f", "false", "no", "n", "0"):
                    return False
        return None

    def merged(self, other):
        """A new HeaderInfo with ``other``'s cards overriding this one's.

        Used for ESO-style files whose extension inherits the primary header
        (INHERIT = T) and may repeat or refine its keywords.
        """
        return HeaderInfo({**self.values, **other.values},
                          {**self.comments, **other.comments})


def scan_header(header):
    """Parse every card of a FITS header once.

    Old IRAF files carry cards astropy cannot parse as written (STELIB's
    ``APNUM1 = '1 0     '`` followed by garbage); such a card is repaired
    silently with astropy's own fixer, deliberately, because one malformed
    bookkeeping card must not make a good spectrum unreadable.

    Parameters
    ----------
    header : astropy.io.fits.Header

    Returns
    -------
    HeaderInfo
    """
    values, comments = {}, {}
    for card in header.cards:
        key = card.keyword
        if not key or key in ("COMMENT", "HISTORY") or key in values:
            continue
        try:
            value = card.value
        except VerifyError:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", VerifyWarning)
                card.verify("silentfix+ignore")
            value = card.value
        values[key] = value
        comments[key] = card.comment
    return HeaderInfo(values, comments)


# --------------------------------------------------------------------------
# Units, positions, times
# --------------------------------------------------------------------------

_UNIT_WORDS = {
    "erg": u.erg, "ergs": u.erg, "s": u.s, "sec": u.s, "second": u.s,
    "cm": u.cm, "cm2": u.cm**2, "cm^2": u.cm**2, "cm**2": u.cm**2,
    "m2": u.m**2, "m^2": u.m**2, "w": u.W, "hz": u.Hz, "jy": u.Jy,
    "mjy": u.mJy, "a": u.AA, "aa": u.AA, "ang": u.AA, "angstrom": u.AA,
    "angstroms": u.AA, "angstroem": u.AA, "nm": u.nm, "nanometers": u.nm,
    "um": u.um, "micron": u.um, "microns": u.um, "m": u.m,
    "count": u.count, "counts": u.count,
}
_SCALE = re.compile(r"^(?:1e([-+]?\d+)|10(?:\*\*|\^)\(?([-+]?\d+)\)?)$",
                    re.IGNORECASE)


def parse_unit(text):
    """Turn a unit string from a FITS header or VOTable into a Unit.

    Astronomers write BUNIT as ``erg /s /cm2 /angstroms`` (STELIB),
    ``erg/cm2/s/A`` (ESI) or ``1E-17 erg/cm^2/s/Ang`` (SDSS): every '/'
    divides by the next word only, and 'A' is Angstrom, not Ampere.  Such
    strings are read word by word first; anything else (``erg / (s cm2
    Angstrom)``, ``erg s**(-1) cm**(-2) nm**(-1)``) goes to astropy.

    Parameters
    ----------
    text : str or UnitBase or None

    Returns
    -------
    astropy.units.UnitBase or None
        None for a missing or unrecognised unit (e.g. 'DU/PIXEL'), which
        callers treat as relative flux.
    """
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    with warnings.catch_warnings():
        # astropy warns about, then guesses at, strings it finds doubtful
        # (multiple slashes); a doubtful string is better left unparsed.
        warnings.simplefilter("error", u.UnitsWarning)
        unit = _unit_from_words(text)
        if unit is not None:
            return unit
        try:
            unit = u.Unit(text, parse_strict="silent")
        except (ValueError, u.UnitsWarning):
            return None
    return None if isinstance(unit, u.UnrecognizedUnit) else unit


def _unit_from_words(text):
    """``erg/cm2/s/A``-style units, each '/' dividing by one word, or None."""
    result = u.dimensionless_unscaled
    for match in re.finditer(r"(/?)\s*([^\s/]+)", text):
        divide, word = match.group(1) == "/", match.group(2)
        scale = _SCALE.match(word)
        if scale:
            part = u.Unit(10.0 ** int(scale.group(1) or scale.group(2)))
        else:
            part = _UNIT_WORDS.get(word.lower())
        if part is None:
            try:
                part = u.Unit(word, parse_strict="silent")
            except (ValueError, u.UnitsWarning):
                return None
            if isinstance(part, u.UnrecognizedUnit):
                return None
        result = result / part if divide else result * part
    return result


def parse_sexagesimal(text):
    """``'-5 32 27'`` or ``'23:50:57.6'`` to a float in the leading unit.

    Seconds of 60 are accepted (STELIB writes ``'-3:59:60.00'``), which is
    why this does not go through astropy's Angle parser.

    Parameters
    ----------
    text : str

    Returns
    -------
    float or None
        Degrees (or hours), None when ``text`` holds no d m s triple.
    """
    match = re.search(r"([+-]?)\s*(\d{1,3})[:\s]+(\d{1,2})[:\s]+(\d{1,2}(?:\.\d*)?)",
                      text)
    if match is None:
        return None
    sign = -1.0 if match.group(1) == "-" else 1.0
    d, m, s = (float(g) for g in match.group(2, 3, 4))
    return sign * (d + m / 60.0 + s / 3600.0)


def to_icrs(ra, dec, frame="icrs", equinox=None):
    """Convert a position to ICRS degrees with astropy.coordinates.

    Parameters
    ----------
    ra, dec : float
        Degrees in ``frame``.
    frame : {"icrs", "fk5", "fk4"}
    equinox : str, optional
        e.g. 'B1950.0' for FK4, 'J2000.0' for FK5.

    Returns
    -------
    tuple of float
        ICRS right ascension and declination in degrees.
    """
    if frame == "fk4":
        system = FK4(equinox=equinox or "B1950.0")
    elif frame == "fk5":
        system = FK5(equinox=equinox or "J2000.0")
    else:
        system = ICRS()
    coord = SkyCoord(ra * u.deg, dec * u.deg, frame=system).icrs
    return float(coord.ra.deg), float(coord.dec.deg)


def header_frame(info):
    """Celestial frame and equinox a header's RA/DEC are given in.

    Parameters
    ----------
    info : HeaderInfo

    Returns
    -------
    tuple
        ``(frame, equinox)``; frame is "icrs", "fk5" or "fk4".  Without any
        frame or equinox keyword the position is taken as ICRS.
    """
    system = (info.text("RADESYS", "RADECSYS", "RADESYSA", "FRAME", "TARGFRAM",
                        "OBJSYS") or "").upper()
    raw = info.get("EQUINOX")
    year = None
    if isinstance(raw, str):
        match = re.search(r"\d{4}(?:\.\d*)?", raw)
        year = float(match.group()) if match else None
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        year = float(raw)
    if system.startswith("ICRS"):
        return "icrs", None
    if system.startswith("FK4") or (not system.startswith("FK5")
                                    and year is not None and year < 1984):
        return "fk4", f"B{year or 1950.0:.1f}"
    if system.startswith("FK5") or year is not None:
        return "fk5", f"J{year or 2000.0:.1f}"
    return "icrs", None


# Words in an RA/DEC card comment saying the number is not the target's
# position in degrees.
_NOT_TARGET_DEGREES = {"boresight", "telescope", "pointing", "rad", "radian",
                       "radians", "hour", "hours", "hrs"}


def header_position(info):
    """Target position from RA/DEC cards, converted to ICRS degrees.

    Accepted forms, in order of trust:

    * sexagesimal strings (hours, degrees);
    * numbers whose card comment carries the sexagesimal value: STELIB
      stores RA/DEC in radians, and for declinations between -10 and 0 deg
      the radians have the sign applied to the degrees only (-5 32 27 stored
      as -4.459 deg); the comment ("Mean Dec  -5 32 27") is correct;
    * numbers in degrees, unless the comment says they are radians, hours
      or the telescope's boresight rather than the target (SDSS plate files).

    Parameters
    ----------
    info : HeaderInfo

    Returns
    -------
    tuple
        ``(ra, dec)`` in ICRS degrees, or ``(None, None)``.
    """
    ra, dec = info.get("RA"), info.get("DEC")
    if ra is None or dec is None:
        return None, None
    ra_note = info.comments.get("RA", "") or ""
    dec_note = info.comments.get("DEC", "") or ""
    if isinstance(ra, str) and isinstance(dec, str):
        ra_deg, dec_deg = parse_sexagesimal(ra), parse_sexagesimal(dec)
        if ra_deg is None or dec_deg is None:
            try:  # decimal degrees written as strings
                ra_deg, dec_deg = float(ra), float(dec)
            except ValueError:
                return None, None
        else:
            ra_deg *= 15.0
    elif isinstance(ra, (int, float)) and isinstance(dec, (int, float)):
        from_notes = parse_sexagesimal(ra_note), parse_sexagesimal(dec_note)
        words = set(re.findall(r"[a-z]+", (ra_note + " " + dec_note).lower()))
        if None not in from_notes:
            ra_deg, dec_deg = from_notes[0] * 15.0, from_notes[1]
        elif words & _NOT_TARGET_DEGREES:
            return None, None
        else:
            ra_deg, dec_deg = float(ra), float(dec)
    else:
        return None, None
    if not (0.0 <= ra_deg < 360.0 and -90.0 <= dec_deg <= 90.0):
        return None, None
    frame, equinox = header_frame(info)
    return to_icrs(ra_deg, dec_deg, frame, equinox)


def mjd_from(value):
    """An observation date as MJD from an MJD number or an ISO date string.

    Parameters
    ----------
    value : float or str or None

    Returns
    -------
    float or None
        None when the value is not a plausible date (e.g. ESI's 'MJD' of
        2965661, which is not an MJD).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        value = float(value)
        return value if 15000.0 < value < 100000.0 else None
    text = str(value).strip()
    if not re.match(r"^\d{4}-\d{2}-\d{2}", text):
        return None
    with warnings.catch_warnings():
        # "dubious year" for UTC dates outside the leap-second table does not
        # change a date at the precision of a day.
        warnings.simplefilter("ignore", ErfaWarning)
        try:
            return float(Time(text, scale="utc").mjd)
        except ValueError:
            return None


def header_mjd(info):
    """Observation date (MJD) from MJD-OBS, MJD or DATE-OBS, first plausible."""
    for key in ("MJD-OBS", "MJD_OBS", "MJD"):
        mjd = mjd_from(info.number(key))
        if mjd is not None:
            return mjd
    return mjd_from(info.text("DATE-OBS", "DATE_OBS"))


def object_class(text):
    """Normalise a published class ('STAR', 'GALAXY', 'QSO') to lower case."""
    if not text:
        return None
    word = str(text).strip().lower()
    return {"quasar": "qso"}.get(word, word)


def header_meta(info, path, index=0, count=1):
    """Standard metadata from one (possibly merged) header.

    Only keywords with an unambiguous meaning are used: FWHM, for instance,
    is the spectral resolution in MILES files but the seeing in XSL files,
    so it is left to the collection's enrich step.

    Parameters
    ----------
    info : HeaderInfo
    path : str or Path
        The file, for the default obs_id.
    index, count : int
        Position of the spectrum and number of spectra in the file; the
        default obs_id carries the index only for multi-spectrum files.

    Returns
    -------
    dict
        All standard keys.
    """
    ra, dec = header_position(info)
    resolving_power = info.number("SPEC_RES")
    # ESO's SPEC_RES is a resolving power.  A value below 100 is a
    # resolution in the spectral unit, as in the Spectrum data model's FITS
    # serialisation (DaCHS's SDM FITS), where SPEC_VAL is the characteristic
    # wavelength in the same unit: their ratio is the resolving power.
    if resolving_power is not None and resolving_power < 100:
        centre = info.number("SPEC_VAL")
        resolving_power = (centre / resolving_power
                           if centre and resolving_power > 0 else None)
        if resolving_power is not None and resolving_power < 100:
            resolving_power = None
    return empty_meta(
        obs_id=make_obs_id(stem(path), index if count > 1 else None),
        target_name=info.text("OBJECT", "OBJNAME", "TARGNAME", "OBJ_NAME"),
        ra=ra,
        dec=dec,
        date_obs=header_mjd(info),
        object_class=object_class(info.text("CLASS")),
        instrument=info.text("INSTRUME") or info.text("TELESCOP"),
        resolving_power=resolving_power,
        redshift=info.number("Z", "REDSHIFT"),
        teff=info.number("TEFF"),
        logg=info.number("LOGG", "LOG_G"),
        feh=info.number("FEH", "FE_H"),
        mk_type=info.text("SPECTYPE", "SPTYPE", "SP_TYPE"),
        rv=info.number("RADVEL", "VRAD"),
    )


def header_medium(info, default):
    """Wavelength medium stated by a header, else ``default``.

    Parameters
    ----------
    info : HeaderInfo
    default : {"air", "vacuum"}
        What the format's documentation says when the header is silent.

    Returns
    -------
    str
    """
    vacuum = info.flag("VACUUM")
    if vacuum is not None:
        return "vacuum" if vacuum else "air"
    airorvac = (info.text("AIRORVAC") or "").lower()
    if airorvac.startswith("vac"):
        return "vacuum"
    if airorvac.startswith("air"):
        return "air"
    ctype = (info.text("CTYPE1") or "").upper()
    if ctype.startswith("AWAV"):
        return "air"
    if ctype.startswith("WAVE"):
        return "vacuum"
    return default


# --------------------------------------------------------------------------
# Assembling a Spectrum
# --------------------------------------------------------------------------

def build_spectrum(path, wavelength, flux, *, medium, meta, index=0,
                   ivar=None, error=None, bad=None):
    """Combine arrays from a file into a validated Spectrum.

    Every reader goes through here so the bad-pixel rules are the same for
    all formats: non-finite flux, flux exactly 0 (the fill value of
    unobserved pixels in STELIB, MaNGA and the echelle quasar files), an
    unknown or zero error, and pixels the file flags are masked.

    Parameters
    ----------
    path : str or Path
    wavelength : Quantity, shape (N,)
        Converted to Angstrom so all readers agree.
    flux : Quantity, shape (N,)
    medium : {"air", "vacuum"}
    meta : dict
    index : int
    ivar : array-like, shape (N,), optional
        Inverse variance in ``flux.unit**-2``; NaN counts as unknown (0).
    error : array-like or Quantity, shape (N,), optional
        1-sigma error; converted to ``ivar``.  Zero, negative (popler's "no
        information") or NaN errors give ivar 0; a column without a single
        usable error counts as absent (ivar None).
    bad : array-like of bool, shape (N,), optional
        Pixels the file flags.

    Returns
    -------
    Spectrum
        Validated.

    Raises
    ------
    ReaderError
        Array lengths differ, or validation fails.
    """
    arrays = {"wavelength": wavelength, "flux": flux}
    for name, values in (("ivar", ivar), ("error", error), ("mask", bad)):
        if values is not None:
            arrays[name] = values
    check_lengths(path, arrays)
    flux_values = np.asarray(flux.value, dtype=float)
    mask = ~np.isfinite(flux_values) | (flux_values == 0)
    if error is not None:
        if isinstance(error, u.Quantity):
            if error.unit.is_equivalent(flux.unit):
                error = error.to_value(flux.unit)
            else:
                error = error.value
        error = np.asarray(error, dtype=float)
        usable = np.isfinite(error) & (error > 0)
        if np.any(usable):
            ivar = np.zeros_like(error)
            ivar[usable] = 1.0 / error[usable] ** 2
        # else: an error column with no value at all is no error column
        # (DaCHS serves unknown errors as NULL/NaN in SDM VOTable and FITS)
    if ivar is not None:
        ivar = np.asarray(ivar, dtype=float)
        ivar = np.where(np.isfinite(ivar), ivar, 0.0)
        mask |= ivar == 0
    if bad is not None:
        mask |= np.asarray(bad, dtype=bool)
    spectrum = Spectrum(
        wavelength=u.Quantity(np.asarray(wavelength.to_value(u.AA), dtype=float),
                              u.AA),
        flux=u.Quantity(flux_values, flux.unit),
        ivar=ivar,
        mask=mask,
        medium=medium,
        meta=meta,
        source=str(path),
        index=index,
    )
    return spectrum.validate()


# --------------------------------------------------------------------------
# Limits: what one file may make a reader spend
# --------------------------------------------------------------------------
#
# Files come from archives being ingested and from anyone on the internet
# using search by example, so every cost a file can impose is bounded before
# it is paid.  A file beyond a limit is refused with a ReaderError that
# names the limit.

#: Bytes a file may hold, after decompression.  A gzip file is measured
#: while it is streamed in 1 MiB pieces, so a compression bomb is refused
#: after at most this much work, in constant memory.
MAX_INPUT_BYTES = 256 * 2**20
#: Bytes of data all HDUs of a FITS file may declare together (tile-
#: compressed images counted decompressed), checked from the headers before
#: astropy reads any data: 8 million float32 pixels, some 20 times the
#: longest 1-D spectra archives publish (ESPRESSO, about 440,000 pixels).
#: A 1-D image at the limit takes about 3 s and 400 MB to read and check.
MAX_FITS_DATA_BYTES = 32 * 2**20
#: HDUs in one FITS file (SDSS spec files have a few dozen).
MAX_FITS_HDUS = 200
#: Header cards in all HDUs of a FITS file together (ESO headers have a few
#: thousand); checked before astropy parses a header.
MAX_HEADER_CARDS = 20_000
#: Bytes of a VOTable or CSV file (after decompression); both are parsed in
#: memory.
MAX_TEXT_BYTES = 32 * 2**20
#: Nesting depth of XML elements (a VOTable needs about 10; astropy parses
#: nested RESOURCEs recursively).
MAX_XML_DEPTH = 64
#: Array elements a VOTable table may make astropy allocate before it reads
#: a row: the declared ``nrows`` times the fixed ``arraysize`` of its fields.
MAX_TABLE_ELEMENTS = 2**24
#: Columns of a CSV or VOTable table.
MAX_TABLE_COLUMNS = 1000

_CHUNK = 2**20
_WARNINGS_LOCK = threading.RLock()
_FITS_BLOCK = 2880
_BITPIX = (8, 16, 32, 64, -32, -64)
_GZIP_MAGIC = b"\x1f\x8b"


class _Stream:
    """A file as a stream of bytes, gunzipped on the fly, with a size cap.

    Every byte the readers take from a file comes through here, so the cap
    holds whatever the file claims about itself.

    Parameters
    ----------
    path : Path
    limit : int
        Most bytes the (decompressed) file may yield.

    Raises
    ------
    ReaderError
        When more than ``limit`` bytes come out, or the gzip stream is cut
        short or corrupt.
    """

    def __init__(self, path, limit):
        self.path, self.limit, self.position = path, limit, 0
        self._raw = open(path, "rb")
        try:
            self.compressed = self._raw.read(2) == _GZIP_MAGIC
            self._raw.seek(0)
            self.size = os.fstat(self._raw.fileno()).st_size
            if self.compressed:
                self._file = gzip.GzipFile(fileobj=self._raw, mode="rb")
            else:
                self._file = self._raw
                if self.size > limit:
                    raise ReaderError(path, f"file of {self.size:,} bytes is larger "
                                      f"than the limit of {limit:,} bytes")
        except BaseException:
            self._raw.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._raw.close()

    def read(self, size):
        """Up to ``size`` bytes; fewer only at the end of the file."""
        try:
            data = self._file.read(min(size, self.limit + 1 - self.position))
        except (OSError, EOFError, zlib.error) as exc:
            raise ReaderError(self.path,
                              f"truncated or corrupt gzip file: {exc}") from exc
        self.position += len(data)
        if self.position > self.limit:
            raise ReaderError(self.path, f"decompresses to more than "
                              f"{self.limit:,} bytes (the limit)")
        return data

    def read_exactly(self, size):
        """``size`` bytes, or fewer when the file ends first."""
        parts, wanted = [], size
        while wanted:
            part = self.read(min(wanted, _CHUNK))
            if not part:
                break
            parts.append(part)
            wanted -= len(part)
        return b"".join(parts)

    def skip(self, size):
        """Pass over ``size`` bytes; return how many there were."""
        if not self.compressed:
            end = min(self.position + size, self.size)
            skipped = end - self.position
            self._raw.seek(end)
            self.position = end
            return skipped
        skipped = 0
        while skipped < size:
            part = self.read(min(size - skipped, _CHUNK))
            if not part:
                break
            skipped += len(part)
        return skipped

    def read_all(self):
        """The rest of the file (at most ``limit`` bytes in all)."""
        parts = []
        while part := self.read(_CHUNK):
            parts.append(part)
        return b"".join(parts)

    def rest_is_padding(self):
        """Read to the end; True when every remaining byte is NUL or blank."""
        clean = True
        while part := self.read(_CHUNK):
            clean = clean and not part.strip(b"\0 ")
        return clean


@dataclass
class FitsSource:
    """An open FITS file with its headers scanned on first use.

    Attributes
    ----------
    path : Path
    hdul : astropy.io.fits.HDUList
        All HDUs, data already read (so truncation shows at open time).
    """

    path: Path
    hdul: fits.HDUList
    _infos: dict = field(default_factory=dict, repr=False)

    def info(self, index=0):
        """HeaderInfo of HDU ``index``, scanned once and cached."""
        if index not in self._infos:
            self._infos[index] = scan_header(self.hdul[index].header)
        return self._infos[index]

    def index_of(self, extname):
        """Index of the HDU with this EXTNAME (case-insensitive), or None."""
        for i, hdu in enumerate(self.hdul):
            if hdu.name.upper() == extname.upper():
                return i
        return None

    def extnames(self):
        """Set of the upper-case EXTNAMEs in the file."""
        return {hdu.name.upper() for hdu in self.hdul}


@dataclass
class VOTableSource:
    """A parsed VOTable file, and the IDs (or names) of its null PARAMs."""

    path: Path
    votable: object
    null_params: frozenset = frozenset()


def _container(path):
    """'fits', 'votable' or 'csv', judged from the first bytes of the file
    (decompressed when it is gzip)."""
    with _Stream(path, MAX_INPUT_BYTES) as stream:
        head = stream.read(16384)
    if not head:
        raise ReaderError(path, "empty file")
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    if head.lstrip().startswith(b"<") and b"<VOTABLE" in head.upper():
        return "votable"
    text = _text_head(head)
    if _CSV_HEADER.search(text) or _DACHS_SPECTRAL_UNIT.search(text):
        return "csv"
    first = next((line for line in text.splitlines() if line.strip()), "")
    if _NUMBERS_ONLY.match(first):
        raise ReaderError(path, "a table of numbers without a header, so its "
                          "columns and units are unknown: add a header such "
                          "as 'wavelength [Angstrom], flux', or take the "
                          "spectrum as VOTable, FITS or CSV (FORMAT="
                          "text/csv), which state them")
    raise ReaderError(path, "not a FITS file, VOTable, or CSV table with a "
                      "'wavelength [unit]' header (starts with "
                      f"{head[:24]!r})")


# --------------------------------------------------------------------------
# FITS: the structure checked before astropy sees the file
# --------------------------------------------------------------------------

def _card_integer(path, cards, key, hdu, default=None):
    """An integer mandatory keyword of a header being walked."""
    if key not in cards:
        if default is not None:
            return default
        raise ReaderError(path, f"corrupt FITS header: HDU {hdu} has no {key}")
    text = cards[key].split(b"/", 1)[0].strip().decode("ascii", "replace")
    if not re.fullmatch(r"[+-]?\d{1,30}", text):
        raise ReaderError(path, f"corrupt FITS header: HDU {hdu} has {key} = "
                          f"{text[:30]!r}, not an integer")
    return int(text)


def _card_flag(cards, key):
    """True when a card of a header being walked holds the logical T."""
    return cards.get(key, b"").split(b"/", 1)[0].strip() == b"T"


def _walk_fits(path):
    """Check a FITS file's structure against the limits, reading no data.

    Walks the headers as 2880-byte blocks: each must end with an END card
    within :data:`MAX_HEADER_CARDS` cards, BITPIX and NAXISn must be valid,
    and the data the headers declare must stay within
    :data:`MAX_FITS_DATA_BYTES` and be present in the file.  Data is
    skipped (read and dropped for gzip), so a file claiming terabytes costs
    no more than its real length, and at most :data:`MAX_INPUT_BYTES`.

    Parameters
    ----------
    path : Path

    Raises
    ------
    ReaderError
        For a truncated file, a header astropy could not size, or a limit
        exceeded; the reason names the HDU and the keyword.
    """
    cards_seen = declared = hdu = 0
    with _Stream(path, MAX_INPUT_BYTES) as stream:
        while True:
            first = stream.read_exactly(_FITS_BLOCK)
            if not first:
                return
            if hdu and not first.startswith(b"XTENSION="):
                if first.strip(b"\0 ") or not stream.rest_is_padding():
                    raise ReaderError(path, f"corrupt FITS file: the bytes after HDU "
                                      f"{hdu - 1} are not a FITS extension")
                return
            if hdu >= MAX_FITS_HDUS:
                raise ReaderError(path, f"FITS file has more than {MAX_FITS_HDUS} "
                                  "HDUs (the limit)")
            cards, block, ended = {}, first, False
            while not ended:
                if len(block) < _FITS_BLOCK:
                    raise ReaderError(path, f"truncated FITS file: the header of "
                                      f"HDU {hdu} has no END card before the "
                                      "file ends")
                for start in range(0, _FITS_BLOCK, 80):
                    image = block[start:start + 80]
                    key = image[:8].rstrip().upper()
                    if key == b"END":
                        ended = True
                        break
                    cards_seen += 1
                    if image[8:10] == b"= ":
                        cards.setdefault(key.decode("ascii", "replace"), image[10:])
                if cards_seen > MAX_HEADER_CARDS:
                    raise ReaderError(path, f"FITS headers have more than "
                                      f"{MAX_HEADER_CARDS:,} cards (the limit)")
                if not ended:
                    block = stream.read_exactly(_FITS_BLOCK)
            size, in_memory, shape = _declared_data(path, cards, hdu)
            declared += in_memory
            if declared > MAX_FITS_DATA_BYTES:
                raise ReaderError(path, f"HDU {hdu} declares {in_memory:,} bytes "
                                  f"of data ({shape}); the limit is "
                                  f"{MAX_FITS_DATA_BYTES:,} bytes per file")
            present = stream.skip(size)
            if present < size:
                raise ReaderError(path, f"truncated FITS file: HDU {hdu} declares "
                                  f"{size:,} bytes of data ({shape}) but only "
                                  f"{present:,} follow its header")
            stream.skip(-size % _FITS_BLOCK)
            hdu += 1


def _declared_data(path, cards, hdu):
    """(bytes in the file, bytes once in memory, shape text) of one HDU."""
    bitpix = _card_integer(path, cards, "BITPIX", hdu)
    if bitpix not in _BITPIX:
        raise ReaderError(path, f"corrupt FITS header: HDU {hdu} has BITPIX = "
                          f"{bitpix}, not one of {_BITPIX}")
    naxis = _card_integer(path, cards, "NAXIS", hdu)
    if not 0 <= naxis <= 999:
        raise ReaderError(path, f"corrupt FITS header: HDU {hdu} has NAXIS = "
                          f"{naxis}, not between 0 and 999")
    axes = [_card_integer(path, cards, f"NAXIS{i}", hdu) for i in range(1, naxis + 1)]
    if any(n < 0 for n in axes):
        raise ReaderError(path, f"corrupt FITS header: HDU {hdu} has a negative "
                          "NAXISn")
    pcount = _card_integer(path, cards, "PCOUNT", hdu, default=0)
    gcount = _card_integer(path, cards, "GCOUNT", hdu, default=1)
    if pcount < 0 or gcount < 0:
        raise ReaderError(path, f"corrupt FITS header: HDU {hdu} has a negative "
                          "PCOUNT or GCOUNT")
    # random groups: NAXIS1 = 0 does not count (FITS 4.0, section 6)
    groups = hdu == 0 and naxis > 0 and axes[0] == 0 and _card_flag(cards,
                                                                     "GROUPS")
    elements = math.prod(axes[1:] if groups else axes) if naxis else 0
    size = abs(bitpix) // 8 * gcount * (pcount + elements) if naxis else 0
    shape = "x".join(str(n) for n in axes) or "no axes"
    in_memory = size
    if _card_flag(cards, "ZIMAGE"):
        # a tile-compressed image is decompressed whole on reading
        zbitpix = _card_integer(path, cards, "ZBITPIX", hdu)
        znaxis = _card_integer(path, cards, "ZNAXIS", hdu)
        if zbitpix not in _BITPIX or not 0 <= znaxis <= 999:
            raise ReaderError(path, f"corrupt FITS header: HDU {hdu} has ZBITPIX "
                              f"= {zbitpix}, ZNAXIS = {znaxis}")
        zaxes = [_card_integer(path, cards, f"ZNAXIS{i}", hdu)
                 for i in range(1, znaxis + 1)]
        if any(n < 0 for n in zaxes):
            raise ReaderError(path, f"corrupt FITS header: HDU {hdu} has a "
                              "negative ZNAXISn")
        in_memory = size + abs(zbitpix) // 8 * math.prod(zaxes)
        shape = "tile-compressed " + ("x".join(str(n) for n in zaxes) or "empty")
    return size, in_memory, shape


#: HDU types whose data astropy can read (ImageHDU and CompImageHDU are
#: both image HDUs; GroupsHDU is a PrimaryHDU)
_KNOWN_HDUS = (fits.PrimaryHDU, fits.ImageHDU, fits.BinTableHDU,
               fits.TableHDU, fits.CompImageHDU)


@contextmanager
def open_fits(path):
    """Open a FITS file, read all HDUs and fail clearly if it is damaged.

    The structure is checked first (:func:`_walk_fits`), so astropy only
    ever reads a file whose headers are bounded and whose declared data
    fits the limits and is present.

    Parameters
    ----------
    path : Path

    Yields
    ------
    FitsSource

    Raises
    ------
    ReaderError
        Unreadable, truncated or corrupt file, or one beyond the limits.
    """
    _walk_fits(path)
    failure, hdul = None, None
    stream = open(path, "rb")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(stream, memmap=False)
            for index, hdu in enumerate(hdul):
                if not isinstance(hdu, _KNOWN_HDUS):
                    # astropy's _CorruptedHDU, or _ValidHDU for an
                    # XTENSION it does not know: neither has data
                    kind = hdu.header.get("XTENSION", "?")
                    raise ValueError(f"HDU {index} is corrupt or of an unknown "
                                     f"type (XTENSION = {str(kind)[:20]!r})")
                hdu.data  # noqa: B018 - read now so truncation shows here
        except _OPEN_ERRORS as exc:
            failure = exc
    corrupt = [str(w.message).strip().splitlines()[0] for w in caught
               if any(phrase in str(w.message) for phrase in _CORRUPT_FITS)]
    if failure is not None or corrupt:
        if hdul is not None:
            hdul.close()
        stream.close()
        if corrupt:
            detail = f": {failure}" if failure is not None else ""
            raise ReaderError(path, f"truncated or corrupt FITS file ({corrupt[0]})"
                              f"{detail}") from failure
        raise ReaderError(path, "not a readable FITS file: "
                          f"{_describe_error(failure)}") from failure
    for warning in caught:
        # Other astropy warnings at open time concern header conformance,
        # which scan_header handles card by card; anything else is passed on.
        if not issubclass(warning.category, (AstropyWarning, ResourceWarning)):
            warnings.warn_explicit(warning.message, warning.category,
                                   warning.filename, warning.lineno)
    try:
        yield FitsSource(Path(path), hdul)
    finally:
        hdul.close()
        stream.close()


# --------------------------------------------------------------------------
# VOTable: XML checked before astropy parses it
# --------------------------------------------------------------------------

class _XMLRefused(Exception):
    """Raised from expat handlers to stop parsing; carries the reason."""


def _cells(arraysize):
    """Fixed number of values per cell of a FIELD/PARAM arraysize ('10x20*')."""
    total = 1
    for part in (arraysize or "1").split("x"):
        digits = part.strip().rstrip("*")
        if digits.isdigit():
            total *= int(digits)
    return total


def _check_xml(path, data):
    """Refuse XML that could reach outside the file or blow up astropy.

    The document is run through expat (the parser astropy uses) with
    handlers that stop at, and name: a DOCTYPE (so no DTD, entity
    declaration or external entity is ever expanded or fetched: no XXE, no
    billion laughs; a VOTable needs none), a ``STREAM href`` or FITS
    serialisation (astropy would open the URL, including ``file://``),
    nesting deeper than :data:`MAX_XML_DEPTH`, more than
    :data:`MAX_TABLE_COLUMNS` fields in a table, and tables whose
    ``nrows`` and ``arraysize`` would make astropy allocate more than
    :data:`MAX_TABLE_ELEMENTS` values up front.

    Parameters
    ----------
    path : Path
    data : bytes
        The whole document.

    Raises
    ------
    ReaderError
    """
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    state = {"depth": 0, "tables": [], "null_params": set()}

    def refuse(reason):
        raise _XMLRefused(reason)

    def doctype(name, *_):
        refuse(f"XML with a DOCTYPE declaration (<!DOCTYPE {name} ...>): DTDs "
               "and entities are refused, a VOTable needs none")

    def entity(name, *_):
        refuse(f"XML declaring the entity {name!r}: entities are refused")

    def start(name, attrs):
        state["depth"] += 1
        if state["depth"] > MAX_XML_DEPTH:
            refuse(f"XML nested deeper than {MAX_XML_DEPTH} elements (the limit)")
        tag = name.rsplit(":", 1)[-1]
        if tag == "STREAM" and "href" in attrs:
            refuse(f"VOTable data from an external STREAM href "
                   f"({attrs['href'][:80]!r}): only inline data is read")
        if tag == "FITS":
            refuse("VOTable with FITS-serialised data: only TABLEDATA, BINARY "
                   "and BINARY2 are read")
        if tag == "TABLE":
            nrows = attrs.get("nrows", "").strip()
            state["tables"].append([int(nrows) if nrows.isdigit() else 0, 0, 0])
        if tag == "PARAM" and not attrs.get("value", "").strip():
            state["null_params"].add(attrs.get("ID") or attrs.get("name"))
        if tag in ("FIELD", "PARAM"):
            cells = _cells(attrs.get("arraysize"))
            if cells > MAX_TABLE_ELEMENTS:
                refuse(f"VOTable {tag} {attrs.get('name', '')!r} with arraysize "
                       f"{attrs.get('arraysize')!r} ({cells:,} values per cell; "
                       f"the limit is {MAX_TABLE_ELEMENTS:,})")
            if tag == "FIELD" and state["tables"]:
                table = state["tables"][-1]
                table[1] += cells
                table[2] += 1
                if table[2] > MAX_TABLE_COLUMNS:
                    refuse(f"VOTable table with more than {MAX_TABLE_COLUMNS} "
                           "columns (the limit)")
                if max(table[0], 1) * table[1] > MAX_TABLE_ELEMENTS:
                    refuse(f"VOTable table declaring nrows = {table[0]:,} rows "
                           f"of {table[1]:,} values (the limit is "
                           f"{MAX_TABLE_ELEMENTS:,} values)")

    def end(name):
        state["depth"] -= 1
        if name.rsplit(":", 1)[-1] == "TABLE" and state["tables"]:
            state["tables"].pop()

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = entity
    parser.ExternalEntityRefHandler = lambda *args: refuse(
        "XML referring to an external entity")
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except _XMLRefused as refused:
        raise ReaderError(path, str(refused)) from None
    except (ExpatError, LookupError) as exc:
        raise ReaderError(path, f"not a readable VOTable: {exc}") from exc
    return state["null_params"]


@contextmanager
def open_votable(path):
    """Parse a VOTable leniently; IVOA-conformance nits are not our concern.

    The document is read once (at most :data:`MAX_TEXT_BYTES`), checked by
    :func:`_check_xml`, and astropy parses those same bytes.

    Yields
    ------
    VOTableSource

    Raises
    ------
    ReaderError
        Too large, not well-formed XML, refused XML or not a VOTable.
    """
    with _Stream(path, MAX_TEXT_BYTES) as stream:
        data = stream.read_all()
    null_params = _check_xml(path, data)
    try:
        with warnings.catch_warnings():
            # verify="ignore" silences conformance warnings; what is left
            # (unknown elements, odd attribute values) is a conformance nit
            warnings.simplefilter("ignore", AstropyWarning)
            table = votable.parse(io.BytesIO(data), verify="ignore")
    except _OPEN_ERRORS as exc:
        raise ReaderError(path, "not a readable VOTable: "
                          f"{_describe_error(exc)}") from exc
    yield VOTableSource(Path(path), table, null_params)


# --------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------

@dataclass
class TextSource:
    """A text table of wavelength, flux and optionally error columns."""

    path: Path
    table: object
    comments: list


#: a header line naming a wavelength column with its unit in brackets
_CSV_HEADER = re.compile(
    r"^\s*(wave\w*|lambda|wl)\s*[\[(][^\])]+[\])]", re.I | re.M)
_CSV_COLUMN = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:[\[(]\s*(.*?)\s*[\])])?\s*$")
#: DaCHS's CSV of an SSAP spectrum states its metadata in comment lines
#: ``# key = value // description``; the spectral unit among them
_DACHS_COMMENT = re.compile(r"^(\w+) = (.*?)(?: // .*)?$")
_DACHS_SPECTRAL_UNIT = re.compile(r"^# ssa_spectralunit = \S", re.M)
#: a line of numbers only (a header-less table, e.g. DaCHS's text/plain)
_NUMBERS_ONLY = re.compile(r"^\s*[-+0-9.eE]+([\s,;]+([-+0-9.eE]+|N/A|nan))+\s*$",
                           re.I)


def _text_head(head):
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        return ""


@contextmanager
def open_csv(path):
    """Read a CSV (or whitespace) table whose header gives column units.

    Yields
    ------
    TextSource

    Raises
    ------
    ReaderError
        Too large, too many columns, or not a table astropy can read.
    """
    from astropy.io import ascii
    from astropy.io.ascii import InconsistentTableError

    with _Stream(path, MAX_TEXT_BYTES) as stream:
        text = stream.read_all().decode("utf-8", errors="replace")
    if "\0" in text:
        raise ReaderError(path, "not a readable CSV table: it holds NUL bytes")
    comments = [line.lstrip("#").strip() for line in text.splitlines()
                if line.lstrip().startswith("#")]
    header = next((line for line in text.splitlines()
                   if line.strip() and not line.lstrip().startswith("#")), "")
    delimiter = "," if "," in header else None
    columns = len(header.split(delimiter))
    if columns > MAX_TABLE_COLUMNS:
        raise ReaderError(path, f"CSV header has {columns:,} columns (the limit "
                          f"is {MAX_TABLE_COLUMNS})")
    try:
        with warnings.catch_warnings():
            # numbers beyond float range are read as inf or kept as text,
            # with a warning; validation then names the column and values
            warnings.simplefilter("ignore", AstropyWarning)
            table = ascii.read(text, format="csv" if delimiter else "basic",
                               comment="#", guess=False)
    except (InconsistentTableError, ValueError, IndexError, TypeError) as exc:
        raise ReaderError(path, f"not a readable CSV table: {exc}") from exc
    yield TextSource(Path(path), table, comments)


def _sniff_csv(source):
    return isinstance(source, TextSource)


def _dachs_params(comments):
    """``key -> value`` of DaCHS's metadata comments (``key = value //
    description``), empty values left out."""
    params = {}
    for comment in comments:
        match = _DACHS_COMMENT.match(comment)
        if match and match.group(2).strip():
            params[match.group(1).lower()] = match.group(2).strip()
    return params


def _dachs_number(params, key):
    try:
        value = float(params[key])
    except (KeyError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _read_csv(source):
    """wavelength [unit], flux [unit] and optional error [unit] columns.

    Units must be given in the header (``wavelength [Angstrom]``); a comment
    line ``# medium: air`` marks air wavelengths (vacuum otherwise).  The
    CSV an SSAP service made with DaCHS serves (columns ``spectral, flux,
    flux_error``) gives them in its metadata comments instead:
    ``ssa_spectralunit``, ``ssa_fluxunit``, ``ssa_spectralucd`` (em.wl;obs.atmos
    for air) and the resolution ``ssa_specres`` at ``ssa_specmid`` (metres).
    """
    path, table = source.path, source.table
    dachs = _dachs_params(source.comments)
    columns = {}
    for name in table.colnames:
        match = _CSV_COLUMN.match(name)
        if not match:
            raise ReaderError(path, f"cannot read column header {name!r}; "
                                    "write e.g. 'wavelength [Angstrom]'")
        label, unit_text = match.group(1).lower(), match.group(2)
        role = ("wavelength" if label.startswith(("wave", "lambda", "wl"))
                or (label == "spectral" and "ssa_spectralunit" in dachs)
                else "flux" if label.startswith("flux") and
                not label.startswith("flux_err")
                else "error" if label.startswith(("err", "sigma", "unc",
                                                  "flux_err"))
                else None)
        if role == "wavelength" and unit_text is None:
            unit_text = dachs.get("ssa_spectralunit")
        if role == "flux" and unit_text is None:
            unit_text = dachs.get("ssa_fluxunit")
        if role and role not in columns:
            columns[role] = (name, unit_text)
    for role in ("wavelength", "flux"):
        if role not in columns:
            raise ReaderError(path, f"CSV has no {role} column (header "
                                    f"{', '.join(table.colnames)})")
    name, unit_text = columns["wavelength"]
    wave_unit = parse_unit(unit_text)
    if wave_unit is None or wave_unit.physical_type != "length":
        raise ReaderError(path, f"wavelength unit missing or not a length: "
                                f"{unit_text!r}; give it in the header, e.g. "
                                "'wavelength [Angstrom]'")
    flux_name, flux_unit_text = columns["flux"]
    flux_unit = parse_unit(flux_unit_text) or u.dimensionless_unscaled
    try:
        wavelength = np.ma.filled(np.ma.asarray(table[name], dtype=float),
                                  np.nan) * wave_unit
        flux = np.ma.filled(np.ma.asarray(table[flux_name], dtype=float),
                            np.nan) * flux_unit
        error = (np.ma.filled(np.ma.asarray(table[columns["error"][0]],
                                            dtype=float), np.nan)
                 if "error" in columns else None)
    except (TypeError, ValueError) as exc:
        raise ReaderError(path, f"non-numeric values in the CSV: {exc}") from exc
    air = (any(re.match(r"medium\s*[:=]\s*air", c, re.I)
               for c in source.comments)
           or "obs.atmos" in dachs.get("ssa_spectralucd", "").lower())
    meta = empty_meta(obs_id=make_obs_id(stem(path)),
                      target_name=dachs.get("ssa_targname"),
                      collection=dachs.get("ssa_collection"))
    resolution = _dachs_number(dachs, "ssa_specres")
    centre = _dachs_number(dachs, "ssa_specmid")
    if resolution and centre and resolution > 0:
        meta["resolving_power"] = centre / resolution
    return [build_spectrum(path, wavelength, flux,
                           medium="air" if air else "vacuum", meta=meta,
                           error=error)]


# --------------------------------------------------------------------------
# Format: 1-D FITS images with a linear or logarithmic wavelength WCS
# --------------------------------------------------------------------------

def _multispec_wavelength(path, info, npix):
    """Wavelengths from IRAF's multispec WAT2 cards (aperture 1).

    The WAT2_nnn strings are 68-character pieces of one text; astropy strips
    their trailing blanks, so each piece is padded back before joining.
    """
    pieces, number = [], 1
    while f"WAT2_{number:03d}" in info:
        pieces.append(str(info.get(f"WAT2_{number:03d}")).ljust(68))
        number += 1
    match = re.search(r'spec1\s*=\s*"([^"]*)"', "".join(pieces))
    if match is None:
        raise ReaderError(path, "no wavelength information: multispec header "
                          "without a spec1 entry in WAT2")
    fields = match.group(1).split()
    # ap beam dtype w1 dw nw z aplow aphigh [function terms]
    dtype = int(float(fields[2]))
    w1, dw, z = float(fields[3]), float(fields[4]), float(fields[6])
    values = w1 + dw * np.arange(npix)
    if dtype == 1:
        values = 10.0 ** values
    elif dtype != 0:
        raise ReaderError(path, f"multispec dispersion type {dtype} "
                          "(non-linear) is not supported")
    return values / (1.0 + z)


def wcs_wavelength(path, info, npix):
    """Wavelengths of the pixels of a 1-D spectrum from its header WCS.

    Handles linear axes (CRVAL1 + CDELT1 or CD1_1, CRPIX1), IRAF's DC-FLAG = 1
    (CRVAL1/CDELT1 are log10 of the wavelength, whatever CTYPE1 says), the
    LOGLIN convention of UVES_popler, the FITS WAVE-LOG/AWAV-LOG axes
    (Greisen et al. 2006) and IRAF multispec linear/log-linear dispersions.

    Parameters
    ----------
    path : Path
    info : HeaderInfo
    npix : int

    Returns
    -------
    Quantity, shape (npix,)

    Raises
    ------
    ReaderError
        CRVAL1 or the increment is missing.
    """
    ctype = (info.text("CTYPE1") or "").upper()
    if ctype == "MULTISPE":
        values = _multispec_wavelength(path, info, npix)
        return values * _wcs_unit(info)
    crval = info.number("CRVAL1")
    if crval is None:
        raise ReaderError(path, "no wavelength information: "
                          + _missing_or_bad(info, "CRVAL1"))
    step = info.number("CD1_1", "CDELT1")
    if step is None:
        raise ReaderError(path, "no wavelength information: "
                          + _missing_or_bad(info, "CD1_1", "CDELT1"))
    if step == 0:
        key = "CD1_1" if info.number("CD1_1") is not None else "CDELT1"
        raise ReaderError(path, f"no wavelength information: {key} = 0 puts "
                          "every pixel at the same wavelength")
    crpix = info.number("CRPIX1")
    offset = np.arange(npix) + 1.0 - (1.0 if crpix is None else crpix)
    if (info.number("DC-FLAG") == 1 or ctype == "LOGLIN"
            or _log10_wave_log(info, ctype, crval)):
        values = 10.0 ** (crval + offset * step)
    elif ctype.endswith("-LOG"):
        values = crval * np.exp(offset * step / crval)
    else:
        values = crval + offset * step
    return values * _wcs_unit(info)


def _log10_wave_log(info, ctype, crval):
    """True for SDSS-style ``WAVE-LOG`` axes that hold log10(lambda / A).

    mangadap's MaStar libraries write CTYPE1 = 'WAVE-LOG', CRVAL1 = 3.5589,
    CDELT1 = 1e-4 and no CUNIT1: read as FITS WAVE-LOG in Angstrom that is
    3.6-4.0 A, read as log10 it is 3622-11100 A.  A real logarithmic axis
    starting below 5 A (X-rays) would state its unit.
    """
    return (ctype.endswith("-LOG") and info.text("CUNIT1") is None
            and 0.0 < crval < 5.0)


def _missing_or_bad(info, *keys):
    """Words for WCS keywords that give no finite number: absent or bad."""
    present = [key for key in keys if info.get(key) is not None]
    if not present:
        if len(keys) == 1:
            return f"the image header has no {keys[0]}"
        return f"the image header has neither {' nor '.join(keys)}"
    return ", ".join(f"{key} = {str(info.get(key))[:30]!r}" for key in present) + (
        " is not a finite number" if len(present) == 1
        else " are not finite numbers")


def _wcs_unit(info):
    """Wavelength unit from CUNIT1 or IRAF's WAT1 "units=", else Angstrom."""
    unit = parse_unit(info.text("CUNIT1"))
    if unit is None:
        match = re.search(r"units=(\S+)", info.text("WAT1_001") or "")
        unit = parse_unit(match.group(1)) if match else None
    if unit is None or unit.physical_type != "length":
        unit = u.AA
    return unit


def _image_hdu_index(source):
    """Index of the first HDU holding image data, or None."""
    for i, hdu in enumerate(source.hdul):
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)) and hdu.data is not None:
            return i
    return None


def _image_planes(source, index):
    """Flux and error arrays of a 1-D, single-row or IRAF multispec image.

    Returns
    -------
    tuple
        ``(flux, error)``; error None when the image has no sigma plane.
        None when the image is not one spectrum.
    """
    data = source.hdul[index].data
    if data.ndim == 1:
        return data, None
    if data.ndim == 2 and data.shape[0] == 1:
        return data[0], None
    if data.ndim == 3 and data.shape[1] == 1:
        # IRAF multispec bands: BANDIDn names each plane ("spectrum", "sigma").
        info = source.info(index)
        error = None
        for band in range(data.shape[0]):
            name = (info.text(f"BANDID{band + 1}") or "").lower()
            if "sigma" in name or "error" in name:
                error = data[band, 0]
        return data[0, 0], error
    return None


def _sniff_image_1d(source):
    if not isinstance(source, FitsSource):
        return False
    index = _image_hdu_index(source)
    return index is not None and _image_planes(source, index) is not None


def _image_spectrum(source, error=None):
    """Read a 1-D image spectrum, optionally with an error array from elsewhere."""
    index = _image_hdu_index(source)
    info = source.info(0).merged(source.info(index)) if index else source.info(0)
    flux, plane_error = _image_planes(source, index)
    flux = np.asarray(flux, dtype=float)
    if error is None:
        error = plane_error
    if error is None and index + 1 < len(source.hdul):
        # An ERROR/SIGMA extension right after the flux image.
        following = source.hdul[index + 1]
        if (following.name.upper() in ("ERR", "ERROR", "SIGMA", "NOISE")
                and following.data is not None and following.data.size == flux.size):
            error = np.ravel(following.data)
    wave = wcs_wavelength(source.path, info, flux.size)
    unit = parse_unit(info.text("BUNIT")) or u.dimensionless_unscaled
    # Ground-based IRAF-era libraries (MILES, STELIB) are in air; headers
    # that know better say so with VACUUM, AIRORVAC or CTYPE1 = WAVE.
    medium = header_medium(info, default="air")
    return build_spectrum(source.path, wave, flux * unit, medium=medium,
                          meta=header_meta(info, source.path), error=error)


def _read_image_1d(source):
    return [_image_spectrum(source)]


# --------------------------------------------------------------------------
# Format: flux and error in two files (linetools' ESI and MagE quasars)
# --------------------------------------------------------------------------

def _split_name(path):
    name = path.name
    base = stem(path)
    return base, name[len(base):]


def _companion(path, to_error: bool):
    """The other file of a flux/error pair beside ``path``, or None."""
    path = Path(path)
    base, rest = _split_name(path)
    for flux_suffix, error_suffix in _FLUX_ERROR_SUFFIXES:
        have, want = ((flux_suffix, error_suffix) if to_error
                      else (error_suffix, flux_suffix))
        if base.endswith(have):
            candidate = path.with_name(base[: -len(have)] + want + rest)
            if candidate.is_file():
                return candidate
    return None


def error_companion(path):
    """The error file beside a flux file (PH957_f.fits -> PH957_e.fits), or None."""
    return _companion(path, to_error=True)


def flux_companion(path):
    """The flux file beside an error file (UM184_nE.fits -> UM184_nF.fits), or None."""
    return _companion(path, to_error=False)


def _sniff_error_file(source):
    return _sniff_image_1d(source) and flux_companion(source.path) is not None


def _read_error_file(source):
    raise ReaderError(source.path, "this is the error array of "
                      f"{flux_companion(source.path).name}; read that file")


def _sniff_split_flux(source):
    return _sniff_image_1d(source) and error_companion(source.path) is not None


def _read_split_flux(source):
    error_path = error_companion(source.path)
    with ExitStack() as stack:
        try:
            errors = stack.enter_context(open_fits(error_path))
        except ReaderError as err:
            raise ReaderError(source.path, f"error file {error_path.name}: "
                              f"{err.reason}") from err
        if not _sniff_image_1d(errors):
            raise ReaderError(source.path, f"error file {error_path.name} is "
                              "not a 1-D image")
        flux_index, error_index = _image_hdu_index(source), _image_hdu_index(errors)
        flux_info, error_info = source.info(flux_index), errors.info(error_index)
        for key in ("NAXIS1", "CRVAL1", "CDELT1", "CD1_1", "CRPIX1"):
            if flux_info.get(key) != error_info.get(key):
                raise ReaderError(source.path, f"error file {error_path.name} "
                                  f"has a different {key}")
        error = np.asarray(_image_planes(errors, error_index)[0], dtype=float)
    return [_image_spectrum(source, error=error)]


# --------------------------------------------------------------------------
# Format: binary tables (ESO Phase 3 1-D spectra, SDM in FITS, plain columns)
# --------------------------------------------------------------------------

_ROLE_UTYPES = {
    "data.spectralaxis.value": "wave",
    "data.fluxaxis.value": "flux",
    "data.fluxaxis.accuracy.staterror": "error",
    "data.fluxaxis.quality": "quality",
}
_ROLE_NAMES = {
    "wave": ("WAVE", "WAVELENGTH", "LAMBDA", "WAVE_VAC", "WAVE_AIR"),
    "loglam": ("LOGLAM",),
    "flux": ("FLUX", "FLUX_REDUCED"),
    "error": ("ERR", "ERR_FLUX", "ERROR", "SIGMA", "FLUX_ERR", "ERR_REDUCED"),
    "ivar": ("IVAR", "INVVAR"),
    "quality": ("QUAL", "QUALITY"),
    "mask": ("MASK", "AND_MASK", "ANDMASK"),
}


def utype_role(utype):
    """Role of a column from its IVOA Spectrum utype, or None.

    Only the main axes count: ESO's ``eso:Data.FluxAxis.Value`` (a telluric
    corrected copy) and ``continuum:...`` are other products.
    """
    if not utype:
        return None
    text = utype.strip().lower()
    namespace = ""
    if ":" in text:
        namespace, text = text.split(":", 1)
    if namespace not in ("", "spec", "sdm", "spectrum"):
        return None
    if text.startswith("spectrum."):
        text = text[len("spectrum."):]
    return _ROLE_UTYPES.get(text)


def ucd_role(ucd):
    """Role of a column from its UCD, or None (em.wl, phot.flux.density...)."""
    if not ucd:
        return None
    words = [w.strip().lower() for w in ucd.split(";")]
    if words[0] == "em.wl":
        return "wave"
    if words[0].startswith("phot.flux.density") or words[0] == "phot.flux":
        return "flux"
    if words[0] == "stat.error" and any(w.startswith("phot.flux") for w in words):
        return "error"
    return None


def assign_roles(columns):
    """Map roles to column names from (name, utype, ucd) triples.

    Utypes win over UCDs, which win over conventional names.

    Parameters
    ----------
    columns : list of tuple
        ``(name, utype, ucd)`` per column, in file order.

    Returns
    -------
    dict
        Role ("wave", "loglam", "flux", "error", "ivar", "quality", "mask")
        to column name.
    """
    roles = {}
    for classify, position in ((utype_role, 1), (ucd_role, 2)):
        for column in columns:
            role = classify(column[position])
            if role and role not in roles:
                roles[role] = column[0]
    upper = {column[0].upper(): column[0] for column in columns}
    for role, names in _ROLE_NAMES.items():
        if role in roles or (role == "loglam" and "wave" in roles):
            continue
        for name in names:
            if name in upper:
                roles[role] = upper[name]
                break
    if "wave" in roles:
        roles.pop("loglam", None)
    return roles


def _table_hdus(source):
    """(index, roles, columns, info) of binary tables with wavelength and flux."""
    found = []
    for i, hdu in enumerate(source.hdul):
        if not isinstance(hdu, fits.BinTableHDU) or hdu.data is None:
            continue
        info = source.info(i)
        columns = [(column.name, info.text(f"TUTYP{number}"),
                    info.text(f"TUCD{number}"))
                   for number, column in enumerate(hdu.columns, start=1)]
        roles = assign_roles(columns)
        if ("wave" in roles or "loglam" in roles) and "flux" in roles:
            found.append((i, roles, columns, info))
    return found


def _sniff_table(source):
    return isinstance(source, FitsSource) and bool(_table_hdus(source))


def _column_unit(hdu, name):
    return parse_unit(hdu.columns[name].unit)


def _table_column(data, roles, role, row):
    """A role's values in one row (array columns) or the whole column, or None."""
    if role not in roles:
        return None
    values = data[roles[role]] if row is None else data[roles[role]][row]
    return np.ravel(np.asarray(values))


def _read_table(source):
    """One spectrum per row of array columns, or one from scalar columns."""
    index, roles, columns, table_info = _table_hdus(source)[0]
    hdu = source.hdul[index]
    info = source.info(0).merged(table_info)
    data = hdu.data
    if len(data) == 0:
        raise ReaderError(source.path, f"binary table in HDU {index} has no rows")
    wave_name = roles.get("wave") or roles["loglam"]
    array_columns = np.ndim(data[wave_name][0]) > 0
    rows = range(len(data)) if array_columns else [None]
    wave_unit = _column_unit(hdu, wave_name) if "wave" in roles else u.AA
    if wave_unit is None or wave_unit.physical_type != "length":
        wave_unit = u.AA  # unit-less wavelength columns are Angstrom by habit
    flux_unit = _column_unit(hdu, roles["flux"]) or u.dimensionless_unscaled
    error_unit = _column_unit(hdu, roles["error"]) if "error" in roles else None
    ucds = {name: (ucd or "") for name, _, ucd in columns}
    # SDM: the spectral axis UCD em.wl;obs.atmos marks air; em.wl is vacuum.
    if "obs.atmos" in ucds.get(wave_name, "").lower():
        medium = "air"
    else:
        medium = header_medium(info, default="vacuum")
    spectra = []
    for position, row in enumerate(rows):
        values = {role: _table_column(data, roles, role, row)
                  for role in ("wave", "loglam", "flux", "error", "ivar",
                               "quality", "mask")}
        if values["wave"] is not None:
            wave = values["wave"].astype(float)
        else:
            wave = 10.0 ** values["loglam"].astype(float)
        error = values["error"]
        if error is not None and error_unit is not None:
            error = error.astype(float) * error_unit
        bad = None
        for flags in (values["quality"], values["mask"]):
            if flags is not None:
                bad = (flags != 0) if bad is None else bad | (flags != 0)
        spectra.append(build_spectrum(
            source.path, wave * wave_unit,
            values["flux"].astype(float) * flux_unit,
            medium=medium, index=position,
            meta=header_meta(info, source.path, position, len(rows)),
            ivar=values["ivar"], error=error, bad=bad))
    return spectra


# --------------------------------------------------------------------------
# Format: SDSS / BOSS spec-lite (spec-PLATE-MJD-FIBERID.fits)
# --------------------------------------------------------------------------

def _columns_upper(hdu):
    return {name.upper(): name for name in hdu.columns.names}


def _sniff_spec_lite(source):
    if not isinstance(source, FitsSource):
        return False
    index = source.index_of("COADD")
    return (index is not None and isinstance(source.hdul[index], fits.BinTableHDU)
            and "LOGLAM" in _columns_upper(source.hdul[index]))


def jname(ra, dec, prefix="J"):
    """IAU-style name from a position, truncated as SDSS does (Jhhmmss.ss+ddmmss.s).

    Parameters
    ----------
    ra, dec : float
        Degrees.
    prefix : str

    Returns
    -------
    str
    """
    centi_seconds = int(np.floor(ra / 15.0 * 360000.0 + 1e-6))
    hh, rest = divmod(centi_seconds, 360000)
    mm, rest = divmod(rest, 6000)
    deci_arcsec = int(np.floor(abs(dec) * 36000.0 + 1e-6))
    dd, drest = divmod(deci_arcsec, 36000)
    dm, drest = divmod(drest, 600)
    sign = "-" if dec < 0 else "+"
    return (f"{prefix}{hh:02d}{mm:02d}{rest // 100:02d}.{rest % 100:02d}"
            f"{sign}{dd:02d}{dm:02d}{drest // 10:02d}.{drest % 10:d}")


def _read_spec_lite(source):
    path = source.path
    coadd = source.hdul[source.index_of("COADD")]
    cols = _columns_upper(coadd)
    for needed in ("FLUX", "IVAR"):
        if needed not in cols:
            raise ReaderError(path, f"COADD table has no {needed.lower()} column")
    data = coadd.data
    loglam = np.asarray(data[cols["LOGLAM"]], dtype=float)
    flux = np.asarray(data[cols["FLUX"]], dtype=float)
    ivar = np.asarray(data[cols["IVAR"]], dtype=float)
    bad = None
    if "AND_MASK" in cols:
        bad = np.asarray(data[cols["AND_MASK"]]) != 0
    primary = source.info(0)
    fields = {}
    specobj = source.index_of("SPECOBJ")
    if specobj is not None and len(source.hdul[specobj].data):
        table = source.hdul[specobj]
        fields = {name.upper(): table.data[0][name] for name in table.columns.names}

    def value(*keys):
        for key in keys:
            if key in fields:
                item = fields[key]
                return item.strip() if isinstance(item, str) else item
            if key in primary:
                return primary.get(key)
        return None

    plate = value("PLATE", "PLATEID")
    mjd = value("MJD")
    fiber = value("FIBERID")
    ra, dec = value("PLUG_RA"), value("PLUG_DEC")
    if ra is not None and dec is not None:
        ra, dec = float(ra), float(dec)
    resolving_power = None
    if "WDISP" in cols:
        # wdisp: Gaussian sigma of the LSF in pixels of 1e-4 dex.
        wdisp = np.asarray(data[cols["WDISP"]], dtype=float)
        centre = slice(max(0, wdisp.size // 2 - 50), wdisp.size // 2 + 50)
        sigma = np.median(wdisp[centre][wdisp[centre] > 0]) if np.any(
            wdisp[centre] > 0) else None
        if sigma:
            resolving_power = 1.0 / (np.log(10) * 1e-4 * sigma * 2.3548)
    if plate is not None and mjd is not None and fiber is not None:
        obs_id = make_obs_id("sdss", f"{int(plate):04d}", int(mjd), f"{int(fiber):04d}")
    else:
        obs_id = make_obs_id("sdss", stem(path))
    meta = empty_meta(
        obs_id=obs_id,
        target_name=(jname(ra, dec, prefix="SDSS J") if ra is not None else None),
        ra=ra, dec=dec,
        date_obs=mjd_from(None if mjd is None else float(mjd)),
        collection="SDSS",
        object_class=object_class(value("CLASS")),
        instrument=value("INSTRUMENT") or primary.text("TELESCOP"),
        resolving_power=resolving_power,
        redshift=None if value("Z") is None else float(value("Z")),
    )
    return [build_spectrum(path, 10.0 ** loglam * u.AA, flux * SDSS_FLUX_UNIT,
                           medium="vacuum", meta=meta, ivar=ivar, bad=bad)]


# --------------------------------------------------------------------------
# Format: SDSS plate-file spectra as linetools ships them
# --------------------------------------------------------------------------

def _sniff_sdss_image(source):
    """Primary 1-D flux, then 1-D ivar and log10 wavelength images (SDSS/BOSS)."""
    if not isinstance(source, FitsSource) or len(source.hdul) < 3:
        return False
    if not (source.info(0).text("TELESCOP") or "").upper().startswith("SDSS"):
        return False
    shapes = [np.shape(hdu.data) if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU))
              else None for hdu in source.hdul[:3]]
    return shapes[0] is not None and len(shapes[0]) == 1 and len(set(shapes)) == 1


def _read_sdss_image(source):
    info = source.info(0)
    flux = np.asarray(source.hdul[0].data, dtype=float)
    ivar = np.asarray(source.hdul[1].data, dtype=float)
    wave = np.asarray(source.hdul[2].data, dtype=float)
    if np.nanmax(wave) < 10:
        wave = 10.0 ** wave  # log10 wavelengths, like COEFF0/COEFF1
    bad = None
    if len(source.hdul) > 3 and np.shape(source.hdul[3].data) == flux.shape:
        # The 4th image is 1 for good pixels: every pixel with zero inverse
        # variance is 0 there.
        bad = np.asarray(source.hdul[3].data) == 0
    unit = parse_unit(info.text("BUNIT")) or u.dimensionless_unscaled
    meta = header_meta(info, source.path)
    meta["obs_id"] = make_obs_id("sdss", stem(source.path))
    meta["instrument"] = "BOSS" if "BOSSVER" in info else "SDSS"
    return [build_spectrum(source.path, wave * u.AA, flux * unit,
                           medium=header_medium(info, default="vacuum"),
                           meta=meta, ivar=ivar, bad=bad)]


# --------------------------------------------------------------------------
# Format: LAMOST low-resolution spectra (DR5+ table, DR1-4 image)
# --------------------------------------------------------------------------

def _lamost_meta(info, path):
    meta = header_meta(info, path)
    obsid = info.get("OBSID")
    meta.update(
        obs_id=make_obs_id("lamost", obsid if obsid is not None else stem(path)),
        target_name=info.text("DESIG", "OBJNAME", "OBJECT"),
        collection="LAMOST",
        instrument="LAMOST LRS",
        resolving_power=LAMOST_RESOLVING_POWER,
    )
    return meta


def _sniff_lamost_table(source):
    if not isinstance(source, FitsSource):
        return False
    index = source.index_of("COADD")
    if index is None or not isinstance(source.hdul[index], fits.BinTableHDU):
        return False
    cols = _columns_upper(source.hdul[index])
    return "WAVELENGTH" in cols and "FLUX" in cols


def _read_lamost_table(source):
    table = source.hdul[source.index_of("COADD")]
    cols = _columns_upper(table)
    if len(table.data) != 1:
        raise ReaderError(source.path, f"LAMOST COADD table has {len(table.data)} "
                          "rows, expected 1")
    row = table.data[0]

    def array(name):
        return np.ravel(np.asarray(row[cols[name]])) if name in cols else None

    bad = None
    for name in ("ANDMASK", "AND_MASK"):
        if name in cols:
            bad = array(name) != 0
    info = source.info(0)
    # LAMOST spectra are relative-flux calibrated, in vacuum (LAMOST DR5+ docs).
    return [build_spectrum(source.path, np.asarray(array("WAVELENGTH"), float) * u.AA,
                           np.asarray(array("FLUX"), float) * u.dimensionless_unscaled,
                           medium=header_medium(info, default="vacuum"),
                           meta=_lamost_meta(info, source.path),
                           ivar=array("IVAR"), bad=bad)]


def _sniff_lamost_image(source):
    if not isinstance(source, FitsSource):
        return False
    data = source.hdul[0].data
    info = source.info(0)
    return (data is not None and data.ndim == 2 and data.shape[0] == 5
            and "COEFF0" in info and "COEFF1" in info
            and ("LAMOST" in (info.text("TELESCOP") or "").upper() or "OBSID" in info))


def _read_lamost_image(source):
    """Rows: flux, inverse variance, wavelength, andmask, ormask (DR1-DR4)."""
    info = source.info(0)
    data = np.asarray(source.hdul[0].data, dtype=float)
    coeff0, coeff1 = info.number("COEFF0"), info.number("COEFF1")
    if coeff0 is None or coeff1 is None:
        raise ReaderError(source.path, "COEFF0/COEFF1 are not numbers")
    wave = 10.0 ** (coeff0 + coeff1 * np.arange(data.shape[1]))
    stored = data[2]
    if np.all(stored > 0) and not np.allclose(stored, wave, rtol=1e-5):
        raise ReaderError(source.path, "the wavelength row disagrees with "
                          "COEFF0/COEFF1")
    return [build_spectrum(source.path, wave * u.AA,
                           data[0] * u.dimensionless_unscaled,
                           medium=header_medium(info, default="vacuum"),
                           meta=_lamost_meta(info, source.path),
                           ivar=data[1], bad=data[3] != 0)]


# --------------------------------------------------------------------------
# Format: the MaNGA spaxel test spectra of sdss-mangadap
# --------------------------------------------------------------------------

_MANGA_HDUS = {"WAVE", "FLUX", "IVAR", "MASK", "Z"}


def _sniff_manga(source):
    return isinstance(source, FitsSource) and _MANGA_HDUS <= source.extnames()


def _read_manga(source):
    """One spectrum per FLUX row; Z holds the galaxy's systemic redshift.

    The file (``data/tests/compile_test_spectra`` in sdss-mangadap) takes
    spaxels from DRP LOGCUBEs: vacuum wavelengths, flux in 1e-17
    erg/s/cm2/A per spaxel, MASK = DRP3PIXMASK (any bit set = do not use),
    SRES = resolving power per pixel.  Rows flagged on every pixel are left
    out, so ``index`` may skip a number.
    """
    path = source.path

    def image(name):
        return np.atleast_2d(np.asarray(source.hdul[source.index_of(name)].data,
                                        dtype=float))

    wave = np.ravel(source.hdul[source.index_of("WAVE")].data).astype(float)
    flux, ivar, mask = image("FLUX"), image("IVAR"), image("MASK")
    z = np.ravel(source.hdul[source.index_of("Z")].data).astype(float)
    sres = image("SRES") if "SRES" in source.extnames() else None
    if not (flux.shape == ivar.shape == mask.shape and flux.shape[1] == wave.size
            and z.size == flux.shape[0]):
        raise ReaderError(path, f"MaNGA arrays do not match: FLUX {flux.shape}, "
                          f"IVAR {ivar.shape}, MASK {mask.shape}, WAVE {wave.size}, "
                          f"Z {z.size}")
    centre = int(np.argmin(np.abs(wave - 0.5 * (wave[0] + wave[-1]))))
    name = re.sub(r"^manga_", "", stem(path), flags=re.IGNORECASE)
    # A spaxel the DRP flags on every pixel (MaNGA_test_spectra.fits.gz
    # row 5: LOWCOV/NOCOV + DONOTUSE throughout) holds no usable spectrum;
    # it is left out and the others keep their row number as index.
    rows = [i for i in range(flux.shape[0]) if not np.all(mask[i] != 0)]
    if not rows:
        raise ReaderError(path, "every MaNGA spaxel is flagged DONOTUSE")
    spectra = []
    for i in rows:
        meta = empty_meta(
            obs_id=make_obs_id("manga", name, i),
            collection="MaNGA",
            object_class="galaxy",
            instrument="BOSS",
            redshift=float(z[i]),
            resolving_power=None if sres is None else float(sres[i, centre]),
        )
        spectra.append(build_spectrum(path, wave * u.AA, flux[i] * SDSS_FLUX_UNIT,
                                      medium="vacuum", meta=meta, index=i,
                                      ivar=ivar[i], bad=mask[i] != 0))
    return spectra


# --------------------------------------------------------------------------
# Format: IVOA Spectral Data Model VOTables (DaCHS SDM output)
# --------------------------------------------------------------------------

_SDM_PARAMS = {
    "target.name": "target_name",
    "target.class": "object_class",
    "target.redshift": "redshift",
    "char.spatialaxis.coverage.location.value": "position",
    "char.timeaxis.coverage.location.value": "date_obs",
    "char.spectralaxis.respower": "resolving_power",
    "char.spectralaxis.resolution": "resolution",
    "char.spectralaxis.coverage.location.value": "spectral_location",
    "dataid.instrument": "instrument",
    "dataid.collection": "collection",
}


def _sdm_key(utype):
    text = (utype or "").strip().lower()
    text = text.split(":", 1)[1] if ":" in text else text
    return text[len("spectrum."):] if text.startswith("spectrum.") else text


def _param_value(param, null_params):
    """A PARAM's value, or None when it is null (``value=""``, which
    astropy gives as None, a masked value, or zeros for arrays)."""
    value = param.value
    if (param.ID or param.name) in null_params or value is None or np.all(np.ma.getmaskarray(value)):
        return None
    if isinstance(value, (str, bytes)):
        return value if value.strip() else None
    return np.ma.filled(value, np.nan) if np.ma.isMaskedArray(value) else value


def _param_length(param, value):
    """A spectral-axis PARAM (Resolution, Coverage.Location) in Angstrom."""
    unit = parse_unit(param.unit) if param.unit else u.AA
    if unit is None or unit.physical_type != "length":
        return None
    number = float(value)
    return (number * unit).to_value(u.AA) if np.isfinite(number) else None


def _sdm_meta(params, path, index, count, null_params=frozenset()):
    """Standard metadata from an SDM VOTable's PARAMs (null ones ignored).

    The resolving power is the SDM's ``Char.SpectralAxis.ResPower``, or else
    its ``Resolution`` (a wavelength width) divided into the spectral
    ``Coverage.Location`` (what SSAP services such as DaCHS serve).
    """
    meta = empty_meta(obs_id=make_obs_id(stem(path), index if count > 1 else None))
    lengths = {}
    for param in params:
        key = _SDM_PARAMS.get(_sdm_key(param.utype))
        value = None if key is None else _param_value(param, null_params)
        if value is None:
            continue
        if key == "position":
            values = np.ravel(np.asarray(value, dtype=float))
            if values.size == 2 and np.all(np.isfinite(values)):
                meta["ra"], meta["dec"] = float(values[0]), float(values[1])
        elif key in ("resolution", "spectral_location"):
            if np.size(value) == 1:
                lengths[key] = _param_length(param, value)
        elif key in ("redshift", "resolving_power", "date_obs"):
            number = float(value) if np.size(value) == 1 else None
            meta[key] = number if number is not None and np.isfinite(number) else None
        elif key == "object_class":
            meta[key] = object_class(value)
        else:
            meta[key] = str(value).strip() or None
    if meta["resolving_power"] is None and lengths.get("resolution") \
            and lengths.get("spectral_location"):
        meta["resolving_power"] = (lengths["spectral_location"]
                                   / lengths["resolution"])
    return meta


def _votable_tables(source):
    """(table, roles, params) of VOTable tables with wavelength and flux.

    Roles map to field positions, because astropy names the columns of
    ``table.array`` by field ID when there is one and by name otherwise.
    """
    found = []
    for resource in source.votable.resources:
        for table in resource.tables:
            columns = [(str(i), f.utype, f.ucd) for i, f in enumerate(table.fields)]
            named = assign_roles(columns)
            # Names are the last resort: re-run with them for fields that
            # have neither a usable utype nor UCD.
            by_name = assign_roles([(f.name or f.ID or "", None, None)
                                    for f in table.fields])
            positions = {f.name or f.ID or "": i for i, f in enumerate(table.fields)}
            roles = {role: int(index) for role, index in named.items()}
            for role, name in by_name.items():
                roles.setdefault(role, positions[name])
            if "loglam" in roles and "wave" not in roles:
                continue  # log wavelengths in a VOTable: not a layout we know
            if "wave" in roles and "flux" in roles:
                params = (list(source.votable.params) + list(resource.params)
                          + list(table.params))
                found.append((table, roles, params))
    return found


def _sniff_votable(source):
    return isinstance(source, VOTableSource) and bool(_votable_tables(source))


def _field_unit(field_, default):
    unit = parse_unit(field_.unit) if field_.unit is not None else None
    return unit if unit is not None else default


def _read_votable(source):
    found = _votable_tables(source)
    spectra = []
    for position, (table, roles, params) in enumerate(found):
        names = table.array.dtype.names

        def column(role, table=table, roles=roles, names=names):
            if role not in roles:
                return None
            values = table.array[names[roles[role]]]
            if values.dtype == object or values.ndim > 1:
                raise ReaderError(source.path, f"VOTable field "
                                  f"{table.fields[roles[role]].name!r} holds an "
                                  "array in each row; SDM VOTables have one "
                                  "value per row")
            return np.ma.filled(np.ma.asarray(values, dtype=float), np.nan)

        wave_field = table.fields[roles["wave"]]
        wave_unit = _field_unit(wave_field, u.AA)
        if wave_unit.physical_type != "length":
            wave_unit = u.AA
        flux_unit = _field_unit(table.fields[roles["flux"]], u.dimensionless_unscaled)
        error = column("error")
        if error is not None:
            error_unit = _field_unit(table.fields[roles["error"]], None)
            if error_unit is not None:
                error = error * error_unit
        # SDM: a spectral axis UCD em.wl;obs.atmos marks air; em.wl is vacuum.
        medium = "air" if "obs.atmos" in (wave_field.ucd or "").lower() else "vacuum"
        quality = column("quality")
        spectra.append(build_spectrum(
            source.path, column("wave") * wave_unit, column("flux") * flux_unit,
            medium=medium, index=position,
            meta=_sdm_meta(params, source.path, position, len(found),
                           source.null_params),
            ivar=column("ivar"), error=error,
            bad=None if quality is None else quality != 0))
    return spectra


# --------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Format:
    """One file layout: how to recognise it and how to read it.

    Attributes
    ----------
    name : str
    sniff : callable
        ``sniff(source) -> bool`` from the file's content only.
    read : callable
        ``read(source) -> list[Spectrum]``; raises ReaderError.
    """

    name: str
    sniff: Callable
    read: Callable


#: Layouts in the order they are tried: specific ones before generic ones.
FORMATS = [
    Format("manga-test-spectra", _sniff_manga, _read_manga),
    Format("sdss-spec-lite", _sniff_spec_lite, _read_spec_lite),
    Format("lamost-coadd-table", _sniff_lamost_table, _read_lamost_table),
    Format("lamost-image", _sniff_lamost_image, _read_lamost_image),
    Format("sdss-image", _sniff_sdss_image, _read_sdss_image),
    Format("sdm-votable", _sniff_votable, _read_votable),
    Format("binary-table", _sniff_table, _read_table),
    Format("error-companion", _sniff_error_file, _read_error_file),
    Format("flux-error-pair", _sniff_split_flux, _read_split_flux),
    Format("image-1d", _sniff_image_1d, _read_image_1d),
    Format("csv-table", _sniff_csv, _read_csv),
]


def _describe(source):
    if isinstance(source, FitsSource):
        parts = []
        for hdu in source.hdul[:10]:
            shape = ("x".join(str(n) for n in np.shape(hdu.data))
                     if hdu.data is not None else "empty")
            parts.append(f"{type(hdu).__name__} {hdu.name or '-'} {shape}")
        if len(source.hdul) > 10:
            parts.append(f"and {len(source.hdul) - 10} more HDUs")
        return "FITS: " + "; ".join(parts)
    return "VOTable without wavelength and flux fields"


def read_spectra(path):
    """Read every spectrum in a file, whatever its layout.

    Parameters
    ----------
    path : str or os.PathLike
        A FITS file (plain or gzip-compressed) or a VOTable.

    Returns
    -------
    list of Spectrum
        Validated, in file order, ``index`` counting from 0.

    Raises
    ------
    ReaderError
        The file is missing, not FITS or VOTable, damaged, in no known
        layout, lacks what the layout needs, or fails validation.
    """
    path = Path(path)
    if not path.exists():
        raise ReaderError(path, "no such file")
    if path.is_dir():
        raise ReaderError(path, "is a directory, not a spectrum file")
    # Warnings are held back until the file is accepted: astropy and numpy
    # warn about what makes a damaged file damaged (a column repeat count
    # of 0, an overflowing WCS), and the refusal already says it.  Overflow
    # and invalid float operations give inf/NaN, which validation refuses.
    # catch_warnings swaps process-wide state, so reads in threads of one
    # process (the DaCHS server) take turns: interleaved, one thread could
    # restore another's recording hook and leave it collecting every later
    # warning of the process.
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught, \
            np.errstate(all="ignore"):
        warnings.simplefilter("always")
        spectra = _read_layout(path)
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category,
                               warning.filename, warning.lineno)
    return spectra


def _read_layout(path):
    """Open ``path`` and read it with the first layout whose sniff matches."""
    try:
        kind = _container(path)
        opener = {"fits": open_fits, "votable": open_votable,
                  "csv": open_csv}[kind]
        with opener(path) as source:
            for fmt in FORMATS:
                try:
                    if not fmt.sniff(source):
                        continue
                    return fmt.read(source)
                except ReaderError:
                    raise
                except _DATA_ERRORS as exc:
                    reason = f"{fmt.name}: {type(exc).__name__}: {exc}"
                    raise ReaderError(path, reason) from exc
            raise ReaderError(path, f"no known spectrum layout ({_describe(source)})")
    except OSError as exc:
        raise ReaderError(path, f"cannot read file: {exc}") from exc
