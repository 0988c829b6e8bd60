"""Screenshots of the explorer for the README, taken in headless Chromium
against the running server (laptop-sized window, 1366 x 900).

    /opt/retrspect/venv/bin/python scripts/explorer_screenshots.py [out_dir]

Writes neighbours.png (a star and its neighbours, overlaid), region.png
(zoomed into H-alpha, the region panel below) and sliders.png (the latent
sliders moved, with the decoded spectrum and the nearest archive spectra).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "resdir" / "explorer" / "screenshots"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else OUT
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from retrspect.vo_services import server
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1366,900",
                 "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
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
