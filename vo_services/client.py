"""A small pyvo helper: the archive spectra nearest to yours, as a Table.

Needs only pyvo and astropy (no DaCHS)::

    from retrspect.vo_services.client import nearest_spectra
    nearest_spectra("http://localhost:8080", "miles_m0028", k=5)
    nearest_spectra("http://localhost:8080", "my_spectrum.fits")
    nearest_spectra("http://localhost:8080", (wavelength, flux))
    nearest_spectra("http://localhost:8080", "miles_m0028", space="pca_blue")

An identifier is answered by TAP with the ``gavo_spectrum_distance`` ADQL
function on the space's table (from ``retrspect.spaces``); a file or
arrays are sent to the search-by-example service as a DALI upload.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

BYEXAMPLE_PATH = "/retrspect/q/byexample/api"
TAP_PATH = "/tap"
MAX_K = 100


def _is_identifier(spectrum) -> bool:
    if not isinstance(spectrum, str):
        return False
    return spectrum.startswith("ivo://") or not os.path.exists(spectrum)


def _adql_string(text: str) -> str:
    """An ADQL string literal (quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def _csv_bytes(wavelength, flux) -> bytes:
    """A CSV with units in the header, as the service reads it."""
    wavelength = u.Quantity(wavelength, u.AA)
    flux = u.Quantity(flux)
    unit = flux.unit.to_string() if flux.unit != u.dimensionless_unscaled else ""
    lines = [f"wavelength [Angstrom], flux [{unit}]" if unit
             else "wavelength [Angstrom], flux"]
    lines += [f"{w!r}, {f!r}" for w, f in
              zip(wavelength.to_value(u.AA), np.asarray(flux.value, float))]
    return ("\n".join(lines) + "\n").encode()


def space_table(tap, space: str) -> str:
    """The TAP table holding a latent space's vectors (``retrspect.spaces``).

    Raises
    ------
    ValueError
        The archive has no such space.
    """
    rows = tap.search("SELECT space_name, vector_table FROM retrspect.spaces"
                      ).to_table()
    tables = {str(name): str(table) for name, table in
              zip(rows["space_name"], rows["vector_table"])}
    if space not in tables:
        raise ValueError(f"no latent space {space!r} in this archive; it has "
                         f"{', '.join(sorted(tables))}")
    return tables[space]


def nearest_spectra(service_url: str, spectrum, *, k: int = 10,
                    space: str = "generic", timeout: float = 120.0) -> Table:
    """The ``k`` archive spectra nearest to ``spectrum`` in a latent space.

    Parameters
    ----------
    service_url : str
        The archive's root URL (e.g. ``http://localhost:8080``).
    spectrum : str, path-like or (wavelength, flux)
        A publisher DID or obs_id of an archive spectrum; a spectrum file
        (FITS, SDM VOTable, CSV with units); or vacuum wavelength and flux
        arrays (Quantity, or Angstrom for plain arrays).
    k : int
        Number of neighbours (1 to 100).
    space : str
        The latent space to search in (``retrspect.spaces``; default
        ``generic``, the shipped VAE's).

    Returns
    -------
    astropy.table.Table
        One row per neighbour, nearest first, with at least ``obs_id``,
        ``pubdid`` and ``dist``.

    Raises
    ------
    ValueError
        Bad ``k``, or a space the archive does not have.
    pyvo.dal.DALServiceError, pyvo.dal.DALQueryError
        The service refused the request (the message says why).
    """
    import pyvo

    if not 1 <= int(k) <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}")
    root = service_url.rstrip("/")
    if _is_identifier(spectrum):
        tap = pyvo.dal.TAPService(root + TAP_PATH)
        table = space_table(tap, space)
        return tap.search(
            f"SELECT TOP {int(k)} v.obs_id, v.pubdid, "
            f"gavo_spectrum_distance(v.latent, {_adql_string(spectrum)}) "
            "AS dist, s.ssa_targname, s.ssa_collection, m.ml_class, "
            "m.redshift, s.accref AS access_url "
            f"FROM {table} AS v JOIN retrspect.spectra AS s "
            "ON s.ssa_pubdid = v.pubdid LEFT OUTER JOIN retrspect.ml_results "
            "AS m ON m.pubdid = v.pubdid ORDER BY dist").to_table()

    if isinstance(spectrum, (str, os.PathLike)):
        path = Path(spectrum)
        name, data = path.name, path.read_bytes()
    else:
        wavelength, flux = spectrum
        name, data = "spectrum.csv", _csv_bytes(wavelength, flux)
    session = pyvo.utils.http.create_session()
    response = session.post(
        root + BYEXAMPLE_PATH,
        data={"UPLOAD": "spectrum,param:upload", "k": str(int(k)),
              "space": space},
        files={"upload": (name, data)}, timeout=timeout)
    if response.status_code == 413:
        raise pyvo.dal.DALServiceError(
            f"{name}: the service refused the upload of {len(data)} bytes as "
            "too large", code=413, url=response.url)
    response.raise_for_status()
    return _votable_result(response.content, response.url)


def _votable_result(content: bytes, url: str) -> Table:
    """The result table, or the service's error as a pyvo exception."""
    import pyvo
    from astropy.io.votable import parse

    votable = parse(io.BytesIO(content))
    for info in votable.resources[0].infos if votable.resources else []:
        if info.name == "QUERY_STATUS" and info.value == "ERROR":
            raise pyvo.dal.DALQueryError(info.content or "service error",
                                         url=url)
    return votable.get_first_table().to_table()
