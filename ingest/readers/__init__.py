"""Spectrum readers: one entry point, one registry of file layouts.

:func:`read_spectra` opens a file, recognises its layout from its *content*
(FITS structure, header keywords, column names and utypes, VOTable field
utypes and UCDs; never the file name's extension) and returns validated
:class:`~retrspect.ingest.spectrum.Spectrum` objects.  Anything that goes
wrong becomes a :class:`~retrspect.ingest.errors.ReaderError` naming the
file and the problem, so a batch import can report a bad file and carry on.

One module per layout (as specutils' ``io/default_loaders``), each a
``sniff_*`` and a ``read_*`` function; :mod:`.registry` lists them in the
order they are tried, so supporting a new layout means one new module and
one :class:`~.registry.Format` line.  Shared parts: :mod:`.headers` (cards,
units, positions, dates, metadata), :mod:`.wcs` (wavelength axes),
:mod:`.columns` (which column is what), :mod:`.build` (the bad-pixel rules)
and :mod:`.safety` (limits checked before astropy parses anything).
"""
from retrspect.ingest.readers.registry import FORMATS, Format, read_spectra

__all__ = ["FORMATS", "Format", "read_spectra"]
