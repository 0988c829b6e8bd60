"""The safety layer: what one file may make a reader spend, checked before
astropy parses anything (sizes, FITS structure, XML, CSV), and the openers
that hand layouts a checked source.  specutils' loaders open FITS
unguarded; uploads from anyone on the internet come through here.
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat
from xml.parsers.expat import ExpatError

import astropy.units as u
from astropy.io import fits, votable
from astropy.io.fits.verify import VerifyError
from astropy.io.votable.exceptions import VOWarning
from astropy.utils.exceptions import AstropyWarning

from retrspect.ingest.errors import ReaderError
from retrspect.ingest.readers.headers import scan_header

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
DATA_ERRORS = (KeyError, ValueError, IndexError, TypeError, OSError,
                EOFError, VerifyError, u.UnitsError, RuntimeError,
                AssertionError, struct.error, zlib.error, ArithmeticError,
                MemoryError)
# What opening a FITS file or parsing a VOTable may raise on a bad file
# (LookupError: an XML declaration naming an unknown encoding; VOWarning:
# astropy raises some VOTable warnings, e.g. W12 for a FIELD without name
# or ID, as exceptions even with verify="ignore").
OPEN_ERRORS = DATA_ERRORS + (ExpatError, LookupError, VOWarning)


def _describe_error(exc):
    """An exception as words for a reason: the message, else the type."""
    text = str(exc).strip()
    if isinstance(exc, MemoryError):
        return f"needs more memory than is available ({text or 'MemoryError'})"
    if isinstance(exc, KeyError) or not text:
        return f"{type(exc).__name__}: {text}"
    return text

# linetools ships some spectra as a flux file and an error file side by side.

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
WARNINGS_LOCK = threading.RLock()
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


def container_kind(path):
    """'fits', 'votable' or 'csv', judged from the first bytes of the file
    (decompressed when it is gzip): 4 KiB tell FITS and VOTable; a text
    table gets 16 KiB, since DaCHS's CSV states its units in comment lines
    that can fill several KiB before the header."""
    with _Stream(path, MAX_INPUT_BYTES) as stream:
        head = stream.read(4096)
        if not head:
            raise ReaderError(path, "empty file")
        if head.startswith(b"SIMPLE  ="):
            return "fits"
        if head.lstrip().startswith(b"<") and b"<VOTABLE" in head.upper():
            return "votable"
        head += stream.read(12288)
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
        except OPEN_ERRORS as exc:
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
    except OPEN_ERRORS as exc:
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
#: the spectral unit among DaCHS's CSV metadata comments
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


