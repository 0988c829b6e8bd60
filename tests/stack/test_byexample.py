"""Search by example, the datalink 'similar spectra' link, the pyvo helper
and the HTML page (in headless Chromium), against the running server."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io.votable import parse_single_table

from retrspect.ingest.sources import read_source, served_arrays
from retrspect.ingest.bundled import bundled_sources
from retrspect.vo_services.client import nearest_spectra

QUERY_ID = "miles_m0028"


@pytest.fixture(scope="module")
def miles_file() -> Path:
    return next(s.path for s in bundled_sources()
                if s.path.name == "MILES_res2.50_star_m0028V.fits")


@pytest.fixture(scope="module")
def resampled_csv(miles_file, tmp_path_factory) -> Path:
    """The archive spectrum, resampled onto another grid with 2% noise and
    written as a CSV with units: what a user might have of the same star."""
    arrays = served_arrays(read_source(str(miles_file))[0])
    rng = np.random.default_rng(42)
    wave = np.arange(3600.0, 7350.0, 1.37)
    good = np.isfinite(arrays["flux"])
    flux = np.interp(wave, arrays["spectral"][good], arrays["flux"][good])
    flux *= 1 + 0.02 * rng.standard_normal(wave.size)
    path = tmp_path_factory.mktemp("upload") / "my_star.csv"
    lines = ["wavelength [Angstrom], flux"]
    lines += [f"{w:.3f}, {f:.6g}" for w, f in zip(wave, flux)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_resampled_noisy_csv_finds_its_original_first(base_url, resampled_csv):
    result = nearest_spectra(base_url, resampled_csv, k=5)
    assert result["obs_id"][0] == QUERY_ID
    assert list(result["rank"]) == [1, 2, 3, 4, 5]
    assert np.all(np.diff(np.asarray(result["dist"])) >= 0)


def test_arrays_upload_finds_its_original_first(base_url, miles_file):
    arrays = served_arrays(read_source(str(miles_file))[0])
    good = np.isfinite(arrays["flux"])
    result = nearest_spectra(base_url, (arrays["spectral"][good] * u.AA,
                                        arrays["flux"][good]), k=3)
    assert result["obs_id"][0] == QUERY_ID


def test_uploading_the_archive_file_gives_its_stored_latent(base_url, tap,
                                                            miles_file):
    """The upload goes through the ingest code: the original file lands on
    its own stored latent.  Not exactly: a bare upload lacks what the archive
    knows of the library (MILES has air wavelengths and R ~ 2200, which
    the catalogue step adds at ingest), so it lands a thousandth of the
    distance to the next neighbour away."""
    result = nearest_spectra(base_url, miles_file, k=2)
    assert result["obs_id"][0] == QUERY_ID
    assert float(result["dist"][0]) < 0.01 * float(result["dist"][1])


def test_identifier_search_equals_tap_knn(base_url, tap):
    by_service = nearest_spectra(base_url, QUERY_ID, k=10)
    import requests
    votable = parse_single_table(io.BytesIO(requests.get(
        f"{base_url}/retrspect/q/byexample/api",
        params={"ID": QUERY_ID, "k": 10}, timeout=60).content)).to_table()
    assert list(votable["obs_id"]) == list(by_service["obs_id"])
    assert "plot" not in votable.colnames


def test_datalink_offers_similar_spectra_per_space(base_url, tap):
    import pyvo
    links = pyvo.dal.adhoc.DatalinkResults.from_result_url(
        f"{base_url}/retrspect/q/sdl/dlmeta?ID=ivo://retrspect.example/~?"
        f"retrspect/{QUERY_ID}")
    similar = [row for row in links
               if "similar" in (row["description"] or "").lower()]
    # one per space the spectrum has a vector in (it has one in each)
    spaces = [str(s) for s in tap.search(
        "SELECT space_name FROM retrspect.spaces").to_table()["space_name"]]
    assert len(spaces) >= 2 and len(similar) == len(spaces)
    for space, row in zip(sorted(spaces, key=lambda s: (s != "generic", s)),
                          similar):
        assert f"space={space}" in row["access_url"]
        assert row["semantics"] == "#auxiliary"
        neighbours = parse_single_table(io.BytesIO(
            row.getdataset().read())).to_table()
        assert neighbours["obs_id"][0] == QUERY_ID and len(neighbours) == 10
        expected = nearest_spectra(base_url, QUERY_ID, k=10, space=space)
        assert list(neighbours["obs_id"]) == list(expected["obs_id"])


@pytest.mark.parametrize("content, message", [
    (b"SIMPLE  = T\nthis is no spectrum", "FITS"),
    (b"wavelength,flux\n1,2\n", "wavelength \\[unit\\]"),
    (b"", "empty"),
])
def test_bad_uploads_get_a_clear_error(base_url, tmp_path, content, message):
    import pyvo
    path = tmp_path / "bad.fits"
    path.write_bytes(content)
    with pytest.raises(pyvo.dal.DALQueryError, match=message):
        nearest_spectra(base_url, path, k=3)


def test_oversized_upload_is_refused(base_url, tmp_path):
    import pyvo
    from retrspect.vo_services.byexample import MAX_UPLOAD_BYTES
    path = tmp_path / "huge.csv"
    with open(path, "wb") as stream:
        stream.write(b"wavelength [Angstrom], flux\n")
        stream.write(b"4000.0, 1.0\n" * (MAX_UPLOAD_BYTES // 12 + 10))
    with pytest.raises(pyvo.dal.DALQueryError, match="exceeds the limit"):
        nearest_spectra(base_url, path, k=3)


def test_k_is_bounded(base_url):
    with pytest.raises(ValueError):
        nearest_spectra(base_url, QUERY_ID, k=1000)


# --------------------------------------------------- the page, in Chromium --

def test_page_shows_neighbours_with_overlay_plots(base_url, browser,
                                                  resampled_csv, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{base_url}/retrspect/q/byexample/form")
    browser.find_element(By.NAME, "spectrum").send_keys(str(resampled_csv))
    k_field = browser.find_element(By.NAME, "k")
    k_field.clear()
    k_field.send_keys("4")
    browser.find_element(By.NAME, "submit").click()
    WebDriverWait(browser, 60).until(
        expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, "img.overlay")))
    images = browser.find_elements(By.CSS_SELECTOR, "img.overlay")
    assert len(images) == 4
    for image in images:  # every plot decoded to a real picture
        assert browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image
        ) > 100
    assert QUERY_ID in browser.page_source
    browser.save_screenshot(str(tmp_path / "byexample.png"))


def test_browse_from_the_spectra_form_to_neighbours(base_url, browser):
    """The web form's 'similar spectra' link opens the neighbours page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{base_url}/retrspect/q/web/form?ssa_targname=HD004307"
                "&__nevow_form__=genForm")
    link = WebDriverWait(browser, 30).until(
        expected_conditions.element_to_be_clickable(
            (By.LINK_TEXT, "similar spectra")))
    link.click()
    WebDriverWait(browser, 60).until(
        expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, "img.overlay")))
    assert len(browser.find_elements(By.CSS_SELECTOR, "img.overlay")) == 10
    assert QUERY_ID in browser.page_source
