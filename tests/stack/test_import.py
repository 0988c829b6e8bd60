"""The DaCHS import of retrspect/q on a batch with broken files.

The batch is staged as a collection folder of its own inside the live
resource directory, imported with the real `retrspect import` (dachs imp),
and removed again afterwards.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits


REPO = Path(__file__).resolve().parents[2]  # the checkout
STAGE = REPO / "resdir" / "data" / "zz_selftest"
SOURCE_PREFIX = "retrspect/data/zz_selftest/"
RETRSPECT = str(Path(sys.executable).parent / "retrspect")


def _stelib_file() -> Path:
    from retrspect.ingest.bundled import bundled_sources
    return next(s.path for s in bundled_sources() if s.collection == "STELIB")


def _image(path: Path, flux, **cards) -> None:
    hdu = fits.PrimaryHDU(np.asarray(flux, dtype=np.float32))
    for key, value in cards.items():
        hdu.header[key] = value
    hdu.writeto(path)


WCS = {"CRVAL1": 4000.0, "CDELT1": 1.0, "CRPIX1": 1.0, "CTYPE1": "WAVE"}

#: broken file name -> words its error message must contain
BROKEN = {
    "truncated.fits": "truncated",
    "not_fits.fits": "not",
    "nan_flux.fits": "flux",
    "zero_flux.fits": "flux",
    "no_wavelength.fits": "wavelength",
    "mismatched.fits": "length",
}


def _write_batch(stage: Path) -> None:
    stage.mkdir(parents=True)
    shutil.copy(_stelib_file(), stage / "selftest_good.fits")
    raw = _stelib_file().read_bytes()
    (stage / "truncated.fits").write_bytes(raw[: len(raw) // 3])
    (stage / "not_fits.fits").write_text("wavelength flux\n4000 1.0\n")
    _image(stage / "nan_flux.fits", np.full(500, np.nan), **WCS)
    _image(stage / "zero_flux.fits", np.zeros(500), **WCS)
    _image(stage / "no_wavelength.fits", np.ones(500))
    table = fits.BinTableHDU.from_columns([
        fits.Column(name="WAVE", format="500D", unit="Angstrom",
                    array=np.linspace(4000, 5000, 500)[None, :]),
        fits.Column(name="FLUX", format="400D",
                    array=np.ones((1, 400))),
    ])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(stage / "mismatched.fits")


def _import() -> str:
    result = subprocess.run([RETRSPECT, "import"], capture_output=True,
                            encoding="utf-8", errors="replace", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture
def staged_batch():
    from gavo import base
    shutil.rmtree(STAGE, ignore_errors=True)
    _write_batch(STAGE)
    yield STAGE
    shutil.rmtree(STAGE, ignore_errors=True)
    from retrspect.vo_services.similarity import space_columns
    with base.getDBConnection("admin") as conn, conn.cursor() as cursor:
        for column in space_columns().values():  # ml_results and each store
            cursor.execute(f"DELETE FROM {column.store} WHERE obs_id IN "
                           "(SELECT obs_id FROM retrspect.raw_data WHERE "
                           "source_file LIKE %(p)s)", {"p": SOURCE_PREFIX + "%"})
        cursor.execute("DELETE FROM dc.products WHERE accref IN (SELECT "
                       "accref FROM retrspect.raw_data WHERE source_file "
                       "LIKE %(p)s)", {"p": SOURCE_PREFIX + "%"})
        cursor.execute("DELETE FROM retrspect.raw_data WHERE source_file "
                       "LIKE %(p)s", {"p": SOURCE_PREFIX + "%"})


def test_broken_files_are_reported_and_the_rest_lands(staged_batch, db, sql):
    before = sql(db, "SELECT COUNT(*) FROM retrspect.raw_data")[0][0]
    output = _import()

    for name, word in BROKEN.items():
        lines = [line for line in output.splitlines()
                 if SOURCE_PREFIX + name in line]
        assert lines, f"no report for {name}:\n{output[-3000:]}"
        assert word in lines[0].lower(), lines[0]

    landed = sql(db, "SELECT source_file, ssa_collection "
                     "FROM retrspect.raw_data WHERE source_file LIKE %(p)s",
                 {"p": SOURCE_PREFIX + "%"})
    # an archive's own file takes its collection from the folder it is in
    assert landed == [(SOURCE_PREFIX + "selftest_good.fits", "zz_selftest")]
    after = sql(db, "SELECT COUNT(*) FROM retrspect.raw_data")[0][0]
    assert after == before + 1

    # a second run reads only what is new (nothing) and duplicates nothing
    again = _import()
    assert SOURCE_PREFIX + "selftest_good.fits" not in again
    assert sql(db, "SELECT COUNT(*) FROM retrspect.raw_data")[0][0] == after
