"""The real stack: DaCHS serving the bundled spectra over SSAP, TAP, ObsCore,
Datalink and SODA, checked with pyvo and STILTS as a user's tools would.
"""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.votable import parse_single_table

from retrspect.vo_services import server
from retrspect.vo_services.similarity import RD_ID

REPO = Path(__file__).resolve().parents[2]  # the checkout
VENV_BIN = Path(sys.executable).parent
MILES_DIR = ("mangadap", "data", "spectral_templates", "miles")


def _miles_file(number: str) -> Path:
    from importlib.util import find_spec
    root = Path(find_spec("mangadap").submodule_search_locations[0])
    return root.joinpath(*MILES_DIR[1:], f"MILES_res2.50_star_m{number}V.fits")


def _pubdid(obs_id: str) -> str:
    return f"ivo://retrspect.example/~?retrspect/{obs_id}"


def _get(url: str, **params) -> bytes:
    import requests
    response = requests.get(url, params=params, timeout=60)
    response.raise_for_status()
    return response.content


# --------------------------------------------------------------- set-up ----

def test_resdir_is_linked_into_dachs_inputs():
    link = server.GAVO_ROOT / "inputs" / server.RD_DIR
    assert link.is_symlink()
    assert link.resolve() == (REPO / "resdir").resolve()


def test_extension_hook_loads_in_a_fresh_dachs_process():
    """The .pth hook runs our registration when DaCHS's ADQL module loads."""
    code = ("import gavo.adql.ufunctions\n"
            "from retrspect.vo_services import dachs_hook\n"
            "print(','.join(dachs_hook.loaded))")
    out = subprocess.run([str(VENV_BIN / "python"), "-c", code], cwd="/",
                         capture_output=True, text=True, check=True).stdout
    assert "retrspect.vo_services.extensions:register_adql_functions" in out


def test_server_and_async_workers_run_on_the_venv():
    """The server runs the venv's Python, and `gavo` on its PATH (which
    starts the async TAP workers) is the venv's wrapper."""
    import shutil
    from retrspect.vo_services import serving
    pids = [p.pid for p in serving.processes() if p.port is not None]
    assert len(pids) == serving.process_count()
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0].decode() == str(VENV_BIN / "python")
        environ = dict(item.split(b"=", 1) for item in
                       Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                       if b"=" in item)
        path = environ[b"PATH"].decode()
        assert shutil.which("gavo", path=path) == str(VENV_BIN / "gavo")


# ------------------------------------------------------------------ TAP ----

def test_obscore_count_matches_ingested(tap, db, sql):
    ingested = sql(db, "SELECT COUNT(*) FROM retrspect.raw_data")[0][0]
    assert ingested >= 1250
    result = tap.search(
        "SELECT COUNT(*) AS n FROM ivoa.obscore "
        "WHERE obs_publisher_did LIKE 'ivo://retrspect.example/%'")
    assert int(result["n"][0]) == ingested
    view = tap.search("SELECT COUNT(*) AS n FROM retrspect.spectra")
    assert int(view["n"][0]) == ingested


def test_async_tap_job(tap, db, sql):
    expected = sql(db, "SELECT COUNT(*) FROM retrspect.raw_data "
                       "WHERE ssa_collection='MILES'")[0][0]
    job = tap.submit_job(
        "SELECT COUNT(*) AS n FROM retrspect.spectra "
        "WHERE ssa_collection='MILES'")
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=120)
    job.raise_if_error()
    assert int(job.fetch_result()["n"][0]) == expected
    job.delete()


def test_collection_counts(db, sql):
    counts = dict(sql(db, "SELECT ssa_collection, COUNT(*) "
                          "FROM retrspect.raw_data GROUP BY ssa_collection"))
    # every MILES star but the one the library itself set aside (m0970)
    assert counts["MILES"] == 984
    assert counts["STELIB"] >= 250
    assert counts["MaNGA"] >= 8


# ----------------------------------------------------------------- SSAP ----

def test_ssap_by_target_name(ssa):
    results = ssa.search(TARGETNAME="HD004307")
    rows = results.to_table()
    miles = rows[rows["ssa_collection"] == "MILES"]
    assert len(miles) == 1
    row = miles[0]
    # the MILES catalogue's labels for this G0V star (paramsMILES_v9.1)
    assert row["mk_type"] == "G0V"
    assert row["teff"] == pytest.approx(5727)
    assert row["logg"] == pytest.approx(4.07)
    assert row["feh"] == pytest.approx(-0.25)
    # MILES covers 3540-7410 A (air); SSAP gives vacuum metres
    assert row["ssa_specstart"] == pytest.approx(3541e-10, abs=3e-10)
    assert row["ssa_specend"] == pytest.approx(7411e-10, abs=3e-10)


def test_ssap_by_position(ssa, db, sql):
    """A cone around a STELIB star's ICRS position finds that star."""
    ra, dec, obs_id = sql(db, """
        SELECT degrees(long(ssa_location)), degrees(lat(ssa_location)), obs_id
        FROM retrspect.raw_data
        WHERE ssa_collection='STELIB' AND ssa_location IS NOT NULL
        ORDER BY obs_id LIMIT 1""")[0]
    results = ssa.search(pos=SkyCoord(ra * u.deg, dec * u.deg),
                         diameter=10 * u.arcsec).to_table()
    assert obs_id in list(results["obs_id"])
    for row in results:
        here = SkyCoord(row["ssa_location"][0] * u.deg,
                        row["ssa_location"][1] * u.deg)
        assert here.separation(SkyCoord(ra * u.deg, dec * u.deg)) < 6 * u.arcsec


def test_ssap_by_band(ssa, db, sql):
    """9500 A lies beyond MILES (3540-7410 A) but within STELIB."""
    results = ssa.search(band=(9.4e-7 * u.m, 9.6e-7 * u.m),
                         maxrec=5000).to_table()
    expected = sql(db, "SELECT COUNT(*) FROM retrspect.raw_data "
                       "WHERE ssa_specstart <= 9.6e-7 AND ssa_specend >= 9.4e-7")
    assert len(results) == expected[0][0] > 0
    assert "MILES" not in set(results["ssa_collection"])
    assert "STELIB" in set(results["ssa_collection"])


# ------------------------------------------------------ datalink / SODA ----

def test_getdata_sdm_flux_equals_fits_file(ssa, base_url):
    """The SDM VOTable served for a MILES star has the FITS file's flux."""
    record = ssa.search(TARGETNAME="HD004307")[0]
    votable = parse_single_table(io.BytesIO(_get(record.getdataurl())))
    served = votable.to_table()
    # VOUnit's (deprecated but valid) spelling, which astropy leaves unparsed
    assert str(votable.get_field_by_id_or_name("spectral").unit) == "Angstrom"
    original = fits.getdata(_miles_file("0028")).astype(float).ravel()
    assert len(served) == len(original)
    np.testing.assert_allclose(np.asarray(served["flux"], float), original,
                               rtol=1e-6)


def test_soda_band_cutout(base_url):
    import pyvo
    links = pyvo.dal.adhoc.DatalinkResults.from_result_url(
        f"{base_url}/retrspect/q/sdl/dlmeta?ID={_pubdid('miles_m0028')}")
    proc = links.get_first_proc()
    stream = proc.processed(band=(5000 * u.AA, 6000 * u.AA))
    served = parse_single_table(io.BytesIO(stream.read())).to_table()
    wave = np.asarray(served["spectral"], float)
    assert wave.min() >= 5000 and wave.max() <= 6000
    # MILES samples 0.9 A per pixel: the cutout keeps (almost) all of them
    assert len(wave) == pytest.approx(1000 / 0.9, rel=0.02)


# --------------------------------------------------------- validators ----

def _stilts(*args: str) -> str:
    result = subprocess.run(["stilts", *args], capture_output=True, text=True,
                            timeout=900)
    return result.stdout + result.stderr


def test_taplint(base_url):
    report = _stilts("taplint", f"tapurl={base_url}/tap",
                     "maxrepeat=3")
    totals = re.search(r"Totals: Errors: (\d+); Warnings: (\d+); "
                       r"Infos: \d+; Summaries: \d+; Failures: (\d+)", report)
    assert totals, report[-2000:]
    errors = [line for line in report.splitlines() if line.startswith("E-")]
    failures = [line for line in report.splitlines() if line.startswith("F-")]
    assert errors == []
    # ObsLocTAP (ivoa.obsplan) does not apply to a spectral archive
    assert all(line.startswith("F-LOC-") for line in failures), failures


@pytest.mark.parametrize("what", ["ssap", "getdata"])
def test_votlint(base_url, tmp_path, what):
    if what == "ssap":
        url = f"{base_url}/retrspect/q/ssa/ssap.xml?REQUEST=queryData&MAXREC=20"
    else:
        url = (f"{base_url}/retrspect/q/sdl/dlget?ID="
               f"{_pubdid('miles_m0028')}")
    path = tmp_path / f"{what}.vot"
    path.write_bytes(_get(url))
    report = _stilts("votlint", f"votable={path}")
    problems = [line for line in report.splitlines()
                if line.startswith(("ERROR", "WARNING"))]
    assert problems == []


def test_dachs_regression_suite():
    result = server.dachs("test", RD_ID, check=False, capture=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    tests_run = re.search(r"^0 of (\d+) bad", output, re.M)
    assert tests_run and int(tests_run.group(1)) >= 4, output
