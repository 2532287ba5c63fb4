"""The served page in a real headless browser (Debian's chromium through selenium and chromium-driver)."""
from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from PIL import Image

from multipill import PillClassifier
from multipill.server import create_app

from conftest import live_server

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[test]'")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "serve_phone.png"
PHONE = {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True}

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver; "
           "the README's test command installs them where apt-get is available)")


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(small_model):
    with live_server(create_app(PillClassifier.load(small_model, progress=False), name="lookalikes")) as url:
        yield url


def upload(driver, url: str, path: Path) -> None:
    driver.get(url)
    driver.find_element(By.ID, "photo").send_keys(str(path))
    WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "status").text in ("Done.",)
                                     or d.find_element(By.ID, "status").text.startswith("Could not"))
    assert driver.find_element(By.ID, "status").text == "Done."


def test_pack_photo_answer_and_card_on_a_phone_screen(browser, site, packs, small_model):
    path = packs / "test" / "Neozep" / "0000.png"
    expected = PillClassifier.load(small_model, progress=False).predict(path)
    upload(browser, site, path)
    answer = browser.find_element(By.ID, "answer").text
    assert answer.endswith(expected.label)
    rows = browser.find_elements(By.CSS_SELECTOR, "#branches tbody tr")
    assert len(rows) == len(expected.top_k) and rows[0].text.startswith(expected.top_k[0][0])
    assert rows[0].find_elements(By.TAG_NAME, "td")[0].text.endswith("%")  # the image branch's column
    facts = browser.find_element(By.ID, "facts").text
    assert "brand" in facts and expected.label in facts and "source:" in facts
    assert "pharmacist" in browser.find_element(By.ID, "warning").text
    width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] == 375, f"the page scrolls sideways on a 375-px screen: {width}"
    canvas = browser.execute_script("const c = document.getElementById('boxes'); return [c.width, c.height]")
    assert canvas == [256, 256]
    # keyboard only: Tab reaches the Grad-CAM button and Enter shows the overlay
    for _ in range(10):
        if browser.switch_to.active_element.get_attribute("id") == "explain":
            break
        ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "explain"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    WebDriverWait(browser, 120).until(ec.visibility_of_element_located((By.ID, "gradcam")))
    assert browser.execute_script("return document.getElementById('gradcam').naturalWidth") > 100
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "format": "png"})
    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
    assert Image.open(SCREENSHOT).size[0] == 375 * PHONE["deviceScaleFactor"]


def test_blank_photo_shows_the_abstention_message(browser, site, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (256, 256), "white").save(blank)
    upload(browser, site, blank)
    box = browser.find_element(By.ID, "abstain")
    assert box.is_displayed() and "confirm with a pharmacist" in box.text
    assert "Why:" in box.text and ("low confidence" in box.text or "unknown product" in box.text)
    assert browser.find_element(By.ID, "answer").text.startswith("Best guess:")
    assert browser.find_element(By.ID, "card").is_displayed()  # every product here has a card
    assert "best guess" in browser.find_element(By.ID, "card-heading").text


def test_not_an_image_is_reported_on_the_page(browser, site, tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("this is not a photo")
    browser.get(site)
    browser.find_element(By.ID, "photo").send_keys(str(fake))
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "status").text.startswith("Could not"))
    assert "415" in browser.find_element(By.ID, "status").text and "not a readable image" in \
        browser.find_element(By.ID, "status").text
    assert not browser.find_element(By.ID, "result").is_displayed()


def test_api_docs_render_offline(browser, site):
    """/docs draws the OpenAPI page from files the package serves (no CDN: this machine has no internet)."""
    browser.get(f"{site}/docs")
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {e.text.replace("\u200b", "") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/predict", "/predict/batch", "/explain", "/classes", "/health"} <= paths
    external = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(u => !u.startsWith(location.origin))")
    assert external == []
