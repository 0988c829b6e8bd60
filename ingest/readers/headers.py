"""Header cards, units, positions, dates and standard metadata: what every
FITS layout reads from its headers, parsed once per HDU.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
from astropy.coordinates import FK4, FK5, ICRS, SkyCoord
from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.time import Time
from erfa import ErfaWarning

from retrspect.ingest.spectrum import empty_meta, make_obs_id, stem

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

