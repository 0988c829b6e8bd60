"""Screenshots of the explorer for the README, taken in headless Chromium
against the running server (laptop-sized window, 1366 x 900).

    /opt/retrspect/venv/bin/python scripts/explorer_screenshots.py [out_dir]

Writes neighbours.png (a star and its neighbours, overlaid), region.png
(zoomed into H-alpha, the region panel below) and sliders.png (the latent
sliders moved, with the decoded spectrum and the nearest archive spectra).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "resdir" / "explorer" / "screenshots"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else OUT
    out.mkdir(parents=True, exist_ok=True)
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from retrspect.vo_services import server
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "benchmarks"))
    from common import headless_chromium
    driver = headless_chromium("--hide-scrollbars")
    try:
        driver.get(f"{server.base_url()}/retrspect/q/explorer/static/"
                   "#id=miles_m0028&space=generic&k=8")
        WebDriverWait(driver, 90).until(lambda d: d.execute_script(
            "return window.retrspect.timings.length > 0 && "
            "document.querySelectorAll('#slider-neighbours tbody tr').length > 0"))
        time.sleep(1)
        driver.save_screenshot(str(out / "neighbours.png"))
        driver.execute_script(
            "const s = document.getElementById('region-preset');"
            "s.value = '6519,6732'; s.dispatchEvent(new Event('change'));"
            "document.getElementById('neighbours-section').scrollIntoView();")
        time.sleep(1.5)
        driver.save_screenshot(str(out / "region.png"))
        slider = driver.find_element("css selector", "#sliders input")
        driver.execute_script("document.getElementById('sliders-section').scrollIntoView()")
        for _ in range(60):
            slider.send_keys(Keys.ARROW_RIGHT)
        time.sleep(2.5)
        driver.save_screenshot(str(out / "sliders.png"))
    finally:
        driver.quit()
    for name in ("neighbours.png", "region.png", "sliders.png"):
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
