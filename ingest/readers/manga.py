"""Layout: the MaNGA spaxel test spectra of sdss-mangadap.
"""
from __future__ import annotations

import re

import astropy.units as u
import numpy as np

from retrspect.ingest.errors import ReaderError
from retrspect.ingest.readers.build import build_spectrum
from retrspect.ingest.readers.safety import FitsSource
from retrspect.ingest.readers.sdss import SDSS_FLUX_UNIT
from retrspect.ingest.spectrum import empty_meta, make_obs_id, stem

# --------------------------------------------------------------------------
# Format: the MaNGA spaxel test spectra of sdss-mangadap
# --------------------------------------------------------------------------

_MANGA_HDUS = {"WAVE", "FLUX", "IVAR", "MASK", "Z"}


def sniff_manga(source):
    return isinstance(source, FitsSource) and _MANGA_HDUS <= source.extnames()


def read_manga(source):
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

