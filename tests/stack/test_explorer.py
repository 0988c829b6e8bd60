"""The explorer (``/retrspect/q/explorer/static/``) in headless Chromium, and
the services it runs on (decode, dimensions, byexample with a latent
vector, TAP in JSON), against the running server."""
from __future__ import annotations

import json
import math
import re
from urllib.parse import urlparse

import numpy as np
import pytest
import requests

from retrspect.ingest.infer import model_dir_from_environment

STAR = "miles_m0028"
KNN = ("SELECT TOP 10 obs_id, gavo_spectrum_distance(latent, '{id}') AS d "
       "FROM retrspect.ml_results ORDER BY d")
EXPLORER = "/retrspect/q/explorer/static/"


def _api(base_url, service, **params):
    response = requests.get(f"{base_url}/retrspect/q/{service}/api",
                            params={**params, "RESPONSEFORMAT": "json"}, timeout=60)
    assert response.status_code == 200, response.text[:300]
    table = response.json()
    names = [c["name"] for c in table["columns"]]
    return [dict(zip(names, row)) for row in table["data"]]


def _latent(tap, obs_id, table="retrspect.ml_results"):
    rows = tap.search(f"SELECT latent FROM {table} WHERE obs_id = '{obs_id}'").to_table()
    return np.asarray(rows["latent"][0], dtype=np.float32)


def _decoder_session(model_id):
    import onnx
    import onnxruntime as ort
    for path in sorted((model_dir_from_environment() / "decoders").glob("*.onnx")):
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        if meta["retrspect.encoder"] == model_id:
            return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    raise AssertionError(f"no decoder for {model_id}")


def _space_model(tap, space):
    return str(tap.search(f"SELECT model FROM retrspect.spaces WHERE space_name = "
                          f"'{space}'").to_table()["model"][0])


# ---------------------------------------------------------------- services --

def test_tap_json_output_carries_latent_vectors(base_url, tap):
    """RESPONSEFORMAT=json of a query selecting a vector column (it failed:
    numpy arrays are not JSON) gives the same numbers as the VOTable."""
    query = f"SELECT obs_id, latent, redshift FROM retrspect.ml_results WHERE obs_id = '{STAR}'"
    response = requests.post(f"{base_url}/tap/sync", data={
        "LANG": "ADQL", "REQUEST": "doQuery", "QUERY": query,
        "RESPONSEFORMAT": "json"}, timeout=60)
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:300]
    row = response.json()["data"][0]
    assert row[0] == STAR
    np.testing.assert_array_equal(np.float32(row[1]), _latent(tap, STAR))


def test_decode_service_gives_the_decoder_models_output(base_url, tap):
    latent = _latent(tap, STAR)
    latent[3] += 0.5
    rows = _api(base_url, "decode", space="generic",
                latent="[" + ",".join(repr(float(v)) for v in latent) + "]")
    session = _decoder_session(_space_model(tap, "generic"))
    want = session.run(["reconstruction"], {"latent": latent[None]})[0][0]
    assert len(rows) == len(want) == 2048
    np.testing.assert_allclose([r["flux"] for r in rows], want, rtol=0, atol=1e-6)
    assert rows[0]["wavelength"] == pytest.approx(3600, abs=0.01)


def test_decode_refuses_a_vector_of_the_wrong_length(base_url):
    response = requests.get(f"{base_url}/retrspect/q/decode/api", params={
        "space": "generic", "latent": "[1, 2, 3]"}, timeout=60)
    # a DALI error document (DaCHS's api renderer answers errors with 200)
    assert 'QUERY_STATUS" value="ERROR"' in response.text
    assert "vector has 3 elements; the latent space has 32 dimensions" in response.text
    response = requests.get(f"{base_url}/retrspect/q/decode/api", params={
        "space": "pca_blue", "latent": "[" + ",".join(["0"] * 16) + "]"}, timeout=60)
    assert "has no decoder" in response.text


def test_dimensions_are_ranked_by_information_over_the_archive(base_url):
    rows = _api(base_url, "dimensions", space="generic")
    assert [r["rank"] for r in rows] == list(range(1, 33))
    assert sorted(r["dim"] for r in rows) == list(range(32))
    bits = [r["information"] for r in rows]
    assert bits == sorted(bits, reverse=True) and bits[0] > 5
    assert all(r["low"] < r["median"] < r["high"] for r in rows)
    # the generic card names z22, z0 and z26 as the three most informative
    assert [r["dim"] for r in rows[:3]] == [22, 0, 26]
    linear = _api(base_url, "dimensions", space="halpha")
    spreads = [r["spread"] for r in linear]
    assert spreads == sorted(spreads, reverse=True) and linear[0]["information"] is None


def test_byexample_takes_a_latent_vector(base_url, tap):
    latent = _latent(tap, STAR)
    rows = _api(base_url, "byexample", space="generic", k="5",
                latent="[" + ",".join(repr(float(v)) for v in latent) + "]")
    want = [str(v) for v in tap.search(KNN.format(id=STAR).replace("TOP 10", "TOP 5"))
            .to_table()["obs_id"]]
    assert [r["obs_id"] for r in rows] == want
    assert rows[0]["dist"] == pytest.approx(0, abs=1e-5)


# ---------------------------------------------------------------- the page --

def _open(browser, base_url, fragment, wait_for="#neighbours tbody tr"):
    """Load the explorer at ``#fragment`` (a new page: a changed fragment
    alone would search in the page already open) and wait for its plots."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get("about:blank")
    browser.get(f"{base_url}{EXPLORER}#{fragment}")
    WebDriverWait(browser, 60).until(EC.presence_of_element_located((By.CSS_SELECTOR, wait_for)))
    WebDriverWait(browser, 60).until(lambda b: b.execute_script(
        "const p = document.getElementById('plot-main');"
        "return p.data && p.data.length > 1"))
    return browser


def _neighbour_rows(browser):
    return browser.execute_script(
        "return [...document.querySelectorAll('#neighbours tbody tr')].map(r => ["
        "r.dataset.obsId, r.querySelector('.distance').textContent,"
        "r.querySelector('.klass').textContent, r.querySelector('.motion').textContent,"
        "r.querySelector('.stellar').textContent])")


def test_search_by_id_lists_neighbours_in_the_adql_order(base_url, browser, tap):
    _open(browser, base_url, f"id={STAR}&space=generic&k=10")
    rows = _neighbour_rows(browser)
    want = tap.search(KNN.format(id=STAR)).to_table()
    assert [r[0] for r in rows] == [str(v) for v in want["obs_id"]]
    for (_, shown, *_), distance in zip(rows[1:], want["d"][1:]):
        assert len(re.sub(r"^0\.0*|\.", "", shown)) == 4          # 4 significant digits
        assert float(shown) == pytest.approx(float(distance), rel=1e-3)
    # the ADQL the page shows is the one it ran, and gives the same list
    shown_adql = browser.find_element("id", "adql-used").get_attribute("textContent")
    assert [str(v) for v in tap.search(shown_adql).to_table()["obs_id"]] == [r[0] for r in rows]
    # every neighbour links to its SSAP row, datalink document and neighbours
    links = browser.execute_script(
        "return [...document.querySelectorAll('#neighbours tbody tr')][3]"
        ".querySelector('.links').innerHTML")
    assert "ssap.xml?REQUEST=queryData&amp;PUBDID=" in links and "dlmeta?ID=" in links
    assert f'#id={rows[3][0]}&amp;space=generic' in links


def test_zooming_the_plot_changes_its_range_and_shows_the_region(base_url, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    _open(browser, base_url, f"id={STAR}&space=generic&k=5")
    before = browser.execute_script(
        "return document.getElementById('plot-main')._fullLayout.xaxis.range.slice()")
    drag = browser.find_element("css selector", "#plot-main .nsewdrag")
    width = drag.size["width"]
    ActionChains(browser).move_to_element_with_offset(drag, -width // 4, 0).click_and_hold() \
        .move_by_offset(width // 8, 0).move_by_offset(width // 8, 0).release().perform()
    after = browser.execute_script(
        "return document.getElementById('plot-main')._fullLayout.xaxis.range.slice()")
    assert before[0] < after[0] < after[1] < before[1]
    assert after[1] - after[0] < 0.5 * (before[1] - before[0])
    region = browser.execute_script(
        "const p = document.getElementById('plot-region');"
        "return [p.hidden, p._fullLayout.xaxis.range.slice(), p.data.length]")
    assert region[0] is False and region[2] >= 2
    x_region = browser.execute_script(
        "return document.getElementById('plot-region').data[0].x")
    assert after[0] - 5 <= min(x_region) and max(x_region) <= after[1] + 5


def test_values_are_formatted_for_a_star_and_a_galaxy(base_url, browser, tap):
    star = tap.search(
        "SELECT s.obs_id, m.velocity, m.velocity_err, m.ml_class, m.class_probability, "
        "s.teff, s.logg, s.feh FROM retrspect.spectra AS s JOIN retrspect.ml_results AS m "
        f"ON m.pubdid = s.ssa_pubdid WHERE s.obs_id = '{STAR}'").to_table()[0]
    _open(browser, base_url, f"id={STAR}&space=generic&k=3")
    values = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#query-values dt')]"
        ".map(dt => [dt.textContent, dt.nextElementSibling.textContent]))")
    minus = lambda x, fmt: format(x, fmt).replace("-", "\u2212")
    assert values["Velocity / z"] == (f"{minus(star['velocity'], '.1f')} ± "
                                      f"{star['velocity_err']:.1f} km/s")
    assert values["Class"] == f"{star['ml_class']} ({round(100 * star['class_probability'])} %)"
    assert values["Catalogue"] == (f"{round(star['teff'])} K, log g {star['logg']:.2f}, "
                                   f"[Fe/H] {'+' if star['feh'] >= 0 else ''}"
                                   f"{minus(star['feh'], '.2f')}")
    galaxy = tap.search(
        "SELECT TOP 1 obs_id, redshift, redshift_err, ml_class, class_probability "
        "FROM retrspect.ml_results WHERE ml_class = 'galaxy' AND redshift > 0.005 "
        "AND redshift_err IS NOT NULL ORDER BY obs_id").to_table()[0]
    _open(browser, base_url, f"id={galaxy['obs_id']}&space=generic&k=3")
    values = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#query-values dt')]"
        ".map(dt => [dt.textContent, dt.nextElementSibling.textContent]))")
    shown = re.fullmatch(r"z = (\S+) ± (\S+)", values["Velocity / z"])
    assert shown, values["Velocity / z"]
    assert float(shown[1]) == pytest.approx(float(galaxy["redshift"]), rel=1e-3)
    assert len(shown[1].replace(".", "").lstrip("0")) == 4
    assert values["Class"] == f"galaxy ({round(100 * galaxy['class_probability'])} %)"
    assert values["Catalogue"] == "–"


def test_moving_a_slider_plots_the_decoders_output(base_url, browser, tap):
    from selenium.webdriver.common.keys import Keys
    _open(browser, base_url, f"id={STAR}&space=generic&k=5", wait_for="#sliders input")
    browser.execute_script("document.getElementById('sliders-section').scrollIntoView()")

    def moved():
        return browser.execute_script(
            "const t = document.getElementById('plot-decoded').data[1];"
            "return [t.y.slice(), t.meta.latent, window.retrspect.timings.length]")

    y0, latent0, n0 = moved()
    slider = browser.find_element("css selector", "#sliders input")
    dim = int(slider.get_attribute("data-dim"))
    assert dim == 22                         # the most informative dimension
    for _ in range(40):
        slider.send_keys(Keys.ARROW_RIGHT)
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 30).until(lambda b: moved()[2] >= n0 + 1 and
                                     moved()[1][dim] != latent0[dim])
    # the last move's answer arrives after the ones it overtook were dropped
    WebDriverWait(browser, 30).until(lambda b: abs(
        moved()[1][dim] - float(slider.get_attribute("value"))) < 1e-9)
    y1, latent1, _ = moved()
    assert latent1[dim] > latent0[dim]
    assert [i for i, (a, b) in enumerate(zip(latent0, latent1)) if a != b] == [dim]
    assert np.max(np.abs(np.subtract(y1, y0))) > 1e-3
    session = _decoder_session(_space_model(tap, "generic"))
    want = session.run(["reconstruction"], {"latent": np.float32([latent1])})[0][0]
    np.testing.assert_allclose(y1, want, rtol=0, atol=1e-6)
    # the nearest archive spectra to the slider position are listed
    rows = browser.execute_script(
        "return document.querySelectorAll('#slider-neighbours tbody tr').length")
    assert rows == 5


def test_no_page_loads_anything_from_another_host(base_url, browser):
    _open(browser, base_url, f"id={STAR}&space=generic&k=5", wait_for="#sliders input")
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".concat([...document.scripts].map(s => s.src).filter(Boolean))")
    host = urlparse(base_url).netloc
    assert loaded and {urlparse(u).netloc for u in loaded} == {host}
    assert any(u.endswith("/vendor/plotly.min.js") for u in loaded)
    assert any(u.endswith("/static/js/samp.js") for u in loaded)
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


# ------------------------------------------------------------------- SAMP --

def test_samp_sends_the_spectrum_to_splat_and_the_table_to_topcat(
        base_url, browser, tap, samp_receiver):
    got, events, consent = samp_receiver
    _open(browser, base_url, f"id={STAR}&space=generic&k=5")
    rows = browser.find_elements("css selector", "#neighbours tbody tr")
    second = rows[1].get_attribute("data-obs-id")
    rows[1].find_element("css selector", "button.samp-spectrum").click()
    assert events["spectrum.load.ssa-generic"].wait(20), (
        browser.find_element("id", "status").text, browser.get_log("browser"))
    message = got["spectrum.load.ssa-generic"]
    assert message["url"] == f"{base_url}/getproduct/retrspect/{second}"
    assert message["name"] == second
    assert message["meta"]["ssa:Access.Format"] == "application/x-votable+xml"
    served = requests.get(message["url"], timeout=60)          # it is the spectrum
    assert served.status_code == 200 and second.encode() in served.content
    assert consent.requests and consent.requests[0][2] == base_url
    browser.find_element("id", "samp-table").click()
    assert events["table.load.votable"].wait(20), browser.find_element("id", "status").text
    table = got["table.load.votable"]
    from astropy.io.votable import parse_single_table
    import io
    sent = parse_single_table(io.BytesIO(requests.get(table["url"], timeout=60).content)
                              ).to_table()
    assert [str(v) for v in sent["obs_id"]] == [r.get_attribute("data-obs-id") for r in rows]


# ------------------------------------------------- other searches, frames --

def test_search_by_upload_and_by_adql(base_url, browser, tmp_path):
    """An uploaded file (the archive's own spectrum, as SODA serves it in
    CSV) lists its original first; an ADQL query's rows become a list whose
    links open their neighbours."""
    from selenium.webdriver.support.ui import WebDriverWait
    served = requests.get(f"{base_url}/retrspect/q/sdl/dlget", params={
        "ID": f"ivo://retrspect.example/~?retrspect/{STAR}", "FORMAT": "text/csv"},
        timeout=60)
    upload = tmp_path / "my_star.csv"
    upload.write_bytes(served.content)
    browser.get(f"{base_url}{EXPLORER}")
    browser.find_element("css selector", "#more-search summary").click()
    browser.find_element("id", "upload-input").send_keys(str(upload))
    browser.find_element("css selector", "#by-upload button").click()
    WebDriverWait(browser, 60).until(lambda b: "your upload" in b.find_element(
        "id", "status").text)
    assert _neighbour_rows(browser)[0][0] == STAR
    assert float(_neighbour_rows(browser)[0][1]) == pytest.approx(0, abs=1e-3)

    adql = browser.find_element("id", "adql-input")
    adql.clear()
    adql.send_keys("SELECT TOP 3 obs_id, teff FROM retrspect.spectra "
                   "WHERE teff > 30000 ORDER BY teff DESC")
    browser.find_element("css selector", "#by-adql button").click()
    WebDriverWait(browser, 60).until(lambda b: "3 rows" in b.find_element("id", "status").text)
    hottest = browser.execute_script(
        "return [...document.querySelectorAll('#browse-table tbody tr')]"
        ".map(r => r.cells[0].textContent)")
    assert len(hottest) == 3
    link = browser.find_element("css selector", "#browse-table tbody tr a")
    assert link.get_attribute("href").endswith(f"#id={hottest[0]}&space=generic")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", link)
    link.click()
    WebDriverWait(browser, 60).until(
        lambda b: b.execute_script("return document.getElementById('query-title')"
                                   ".textContent").startswith(hottest[0]),
        message=f"status: {browser.find_element('id', 'status').get_attribute('textContent')}"
                f", url: {browser.current_url}")
    WebDriverWait(browser, 60).until(lambda b: _neighbour_rows(b) and
                                     _neighbour_rows(b)[0][0] == hottest[0])


def test_rest_frame_and_another_space(base_url, browser, tap):
    """The rest frame divides each plotted wavelength by 1 + z of its row;
    the halpha space lists the neighbours its own ADQL gives."""
    galaxy = tap.search("SELECT TOP 1 obs_id, redshift FROM retrspect.ml_results "
                        "WHERE ml_class = 'galaxy' AND redshift > 0.01 "
                        "ORDER BY obs_id").to_table()[0]
    _open(browser, base_url, f"id={galaxy['obs_id']}&space=generic&k=3")
    observed = browser.execute_script("return document.getElementById('plot-main').data[0].x")
    browser.find_element("css selector", "input[name=frame][value=rest]").click()
    rest = browser.execute_script("return document.getElementById('plot-main').data[0].x")
    np.testing.assert_allclose(np.divide(observed, rest), 1 + float(galaxy["redshift"]),
                               rtol=1e-9)

    _open(browser, base_url, f"id={STAR}&space=halpha&k=6")
    want = tap.search(f"SELECT TOP 6 obs_id, gavo_spectrum_distance(latent, '{STAR}') AS d "
                      "FROM retrspect.space_halpha ORDER BY d").to_table()
    assert [r[0] for r in _neighbour_rows(browser)] == [str(v) for v in want["obs_id"]]
    assert browser.find_element("id", "space-label").text == "in halpha"


def test_the_keyboard_alone_searches_and_moves_through_neighbours(base_url, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(f"{base_url}{EXPLORER}")
    WebDriverWait(browser, 30).until(lambda b: b.execute_script(
        "return document.querySelectorAll('#space-select option').length") >= 3)
    ActionChains(browser).send_keys("/").perform()
    assert browser.switch_to.active_element.get_attribute("id") == "id-input"
    ActionChains(browser).send_keys(STAR, Keys.ENTER).perform()
    WebDriverWait(browser, 60).until(lambda b: len(_neighbour_rows(b)) == 10)
    browser.find_element("tag name", "body").click()
    ActionChains(browser).send_keys("j", "j").perform()
    selected = browser.execute_script(
        "return document.querySelector('#neighbours tbody tr.selected').dataset.obsId")
    assert selected == _neighbour_rows(browser)[2][0]
    assert browser.switch_to.active_element.get_attribute("data-obs-id") == selected
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    WebDriverWait(browser, 60).until(lambda b: b.find_element(
        "id", "query-title").text.startswith(selected))
