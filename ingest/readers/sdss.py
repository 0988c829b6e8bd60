"""Layouts: SDSS / BOSS spec-lite files, and SDSS plate-file spectra as
linetools ships them.
"""
from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.io import fits

from retrspect.ingest.errors import ReaderError
from retrspect.ingest.readers.build import build_spectrum
from retrspect.ingest.readers.columns import columns_upper
from retrspect.ingest.readers.headers import (
    header_medium,
    header_meta,
    mjd_from,
    object_class,
    parse_unit,
)
from retrspect.ingest.readers.safety import FitsSource
from retrspect.ingest.spectrum import empty_meta, make_obs_id, stem

#: SDSS, BOSS, MaNGA and the linetools SDSS file give flux in these units.
SDSS_FLUX_UNIT = u.Unit("1e-17 erg / (s cm2 Angstrom)")


# --------------------------------------------------------------------------
# Format: SDSS / BOSS spec-lite (spec-PLATE-MJD-FIBERID.fits)
# --------------------------------------------------------------------------

def sniff_spec_lite(source):
    if not isinstance(source, FitsSource):
        return False
    index = source.index_of("COADD")
    return (index is not None and isinstance(source.hdul[index], fits.BinTableHDU)
            and "LOGLAM" in columns_upper(source.hdul[index]))


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


def read_spec_lite(source):
    path = source.path
    coadd = source.hdul[source.index_of("COADD")]
    cols = columns_upper(coadd)
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

def sniff_sdss_image(source):
    """Primary 1-D flux, then 1-D ivar and log10 wavelength images (SDSS/BOSS)."""
    if not isinstance(source, FitsSource) or len(source.hdul) < 3:
        return False
    if not (source.info(0).text("TELESCOP") or "").upper().startswith("SDSS"):
        return False
    shapes = [np.shape(hdu.data) if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU))
              else None for hdu in source.hdul[:3]]
    return shapes[0] is not None and len(shapes[0]) == 1 and len(set(shapes)) == 1


def read_sdss_image(source):
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

