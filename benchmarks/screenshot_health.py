"""The README's health picture: the Health panel of the example run, drawn by the real app in headless Chromium.

``python benchmarks/screenshot_health.py`` serves ``data/example`` on loopback, opens ``trainer_run`` epoch 9, waits for
the background health summary to fill the panel and writes ``benchmarks/health_panel.png`` (the panel alone).
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from eval_viewer.app import create_app, ids
from eval_viewer.backend import LogStore

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--window-size=1400,1200", "--hide-scrollbars")


def main() -> int:
    with tempfile.TemporaryDirectory() as cache, LogStore(ROOT / "data" / "example", cache_dir=cache) as store:
        server = make_server("127.0.0.1", 8767, create_app(store).server, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        options = webdriver.ChromeOptions()
        for flag in FLAGS:
            options.add_argument(flag)
        options.binary_location = "/usr/bin/chromium"
        driver = webdriver.Chrome(options=options)  # Debian's chromedriver on PATH; nothing is downloaded
        try:
            driver.get("http://127.0.0.1:8767/?run=trainer_run&split=val&epoch=9&metric=miou")
            box = WebDriverWait(driver, 60).until(ec.presence_of_element_located((By.ID, ids.HEALTH_BOX)))
            WebDriverWait(driver, 120).until(lambda d: "dead" in box.text.lower() and "%" in box.text)
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
            box.screenshot(str(ROOT / "benchmarks" / "health_panel.png"))
        finally:
            driver.quit()
            server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
