"""Explorer benchmark: from a latent slider's input event to the redrawn
decoded spectrum, in headless Chromium against the running server.

The page times each redraw itself (``window.retrspect.timings``: from the
slider's ``input`` event to the end of ``Plotly.react``).  The slider is
moved step by step as a person drags it, one key press every ``--every``
ms, for each space with a decoder.  Baselines in the same run: the decode
request alone from Python (HTTP round trip through HAProxy and DaCHS), and
the ONNX decoder alone.  Target: median and p95 at most 150 ms.

    python tests/benchmarks/bench_explorer.py --moves 60
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import headless_chromium, save  # noqa: E402

TARGET_MS = 150
STAR = "miles_m0028"


def _stats(values) -> dict:
    values = np.asarray(values, dtype=float)
    return {"n": int(len(values)), "median_ms": round(float(np.median(values)), 1),
            "p95_ms": round(float(np.percentile(values, 95)), 1),
            "max_ms": round(float(values.max()), 1)}


def slider_timings(driver, base: str, space: str, moves: int, every_ms: float) -> list[float]:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get("about:blank")       # a new page: a changed fragment alone searches in place
    driver.get(f"{base}/retrspect/q/explorer/static/#id={STAR}&space={space}&k=5")
    WebDriverWait(driver, 90).until(lambda d: d.execute_script(
        "return document.querySelector('#sliders input') !== null && "
        "window.retrspect.timings.length > 0"))
    slider = driver.find_element("css selector", "#sliders input")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});"
                          "window.retrspect.timings.length = 0", slider)
    for i in range(moves):
        slider.send_keys(Keys.ARROW_RIGHT if (i // 20) % 2 == 0 else Keys.ARROW_LEFT)
        time.sleep(every_ms / 1000)
    time.sleep(1)
    return driver.execute_script("return window.retrspect.timings.slice()")


def decode_request_ms(base: str, space: str, dim: int, n: int = 40) -> list[float]:
    out = []
    for i in range(n):
        latent = "[" + ",".join(["0.1"] * dim) + "]"
        started = time.perf_counter()
        response = requests.get(f"{base}/retrspect/q/decode/api", params={
            "space": space, "latent": latent, "RESPONSEFORMAT": "json"}, timeout=30)
        response.raise_for_status()
        response.json()
        out.append(1000 * (time.perf_counter() - started))
    return out


def main(argv=None) -> int:
    from retrspect.vo_services import server
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--moves", type=int, default=60)
    parser.add_argument("--every", type=float, default=80.0,
                        help="ms between key presses on the slider")
    args = parser.parse_args(argv)
    base = server.base_url()
    figures = {"target_ms": TARGET_MS, "every_ms": args.every, "spaces": {}}
    driver = headless_chromium()
    try:
        for space, dim in (("generic", 32), ("halpha", 64)):
            timings = slider_timings(driver, base, space, args.moves, args.every)
            figures["spaces"][space] = {
                "slider_to_plot": _stats(timings),
                "decode_request_alone": _stats(decode_request_ms(base, space, dim))}
    finally:
        driver.quit()
    figures["met"] = all(s["slider_to_plot"]["p95_ms"] <= TARGET_MS
                         for s in figures["spaces"].values())
    print(save("explorer", figures))
    for space, s in figures["spaces"].items():
        print(f"{space}: slider to plot median {s['slider_to_plot']['median_ms']} ms, "
              f"p95 {s['slider_to_plot']['p95_ms']} ms; decode request alone "
              f"median {s['decode_request_alone']['median_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
