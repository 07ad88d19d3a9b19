"""The try-it page in a real browser: Debian's headless Chromium, driven by Selenium, against a real
`fer-mtl serve` (the shipped model) on 127.0.0.1.

Skipped with a reason when Chromium, its driver or Selenium is missing; under CI (env CI set) that
is a failure instead: .ci/run installs them. Screenshots land in the test's tmp_path; set
FER_MTL_WRITE_PAGE_PNG=1 to also refresh docs/page.png (the README's picture).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser
requests = pytest.importorskip("requests")

from tests._serve import Server, running_server  # noqa: E402  (needs requests)

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY_MB = 1
WAIT_S = 120  # the first prediction of a cold server on a busy 2-core machine
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # A synthetic camera (no face in it) and no permission prompt, for the webcam test.
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
)  # fmt: skip


def _missing() -> str | None:
    for binary, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        if shutil.which(binary) is None:
            return f"`{binary}` is not installed (apt-get install -y {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests must run under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`fer-mtl serve` with the shipped model and the page on (its default), on a free loopback port."""
    reason = _missing()
    if reason:
        _skip_or_fail(reason)
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with running_server(log, "--max-body-mb", str(MAX_BODY_MB)) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_window_size(1100, 1000)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: Any, server: Server) -> Any:
    """The page, freshly loaded, at a desktop size."""
    browser.set_window_size(1100, 1000)
    browser.get(f"{server.url}/")
    browser.get_log("browser")  # start each test with an empty console
    return browser


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photograph with one face: scikit-image's bundled astronaut (Eileen Collins, public domain)."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue())
    return path


def _wait_state(driver: Any, *states: str, timeout: float = WAIT_S) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    app = driver.find_element("id", "app")
    WebDriverWait(driver, timeout).until(lambda _: app.get_attribute("data-state") in states)
    return app.get_attribute("data-state")


def _upload(driver: Any, path: Path) -> str:
    driver.find_element("id", "file").send_keys(str(path))
    return _wait_state(driver, "done", "error")


def _severe_console(driver: Any) -> list[str]:
    """Console errors: a CSP violation or a script error lands here."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _post_like_the_page(server: Server, content: bytes) -> Any:
    """The request the page sends for a file: base64 in V1 JSON, compact (as JSON.stringify writes it)."""
    import requests

    body = json.dumps({"instances": [{"b64": base64.b64encode(content).decode()}]}, separators=(",", ":"))
    return requests.post(
        f"{server.url}/v1/models/fer-mtl:predict", data=body, headers={"content-type": "application/json"}, timeout=120
    )


def _server_answer(server: Server, path: Path) -> list[dict[str, Any]]:
    r = _post_like_the_page(server, path.read_bytes())
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]["faces"]


def _shown(driver: Any) -> list[dict[str, Any]]:
    """What the page shows per face: label and (class, probability, text) per task, and the box's placement."""
    return driver.execute_script(
        """
        const cards = [...document.querySelectorAll('#faces > li.face')];
        return cards.map((card) => {
          const tasks = {};
          for (const section of card.querySelectorAll('section.task')) {
            tasks[section.dataset.task] = {
              label: section.querySelector('.top').textContent,
              rows: [...section.querySelectorAll('.row')].map((r) => [
                r.dataset.class, Number(r.dataset.probability), r.querySelector('.pct').textContent]),
            };
          }
          const box = document.querySelector(`#boxes .box[data-face="${card.dataset.face}"]`);
          const stage = document.getElementById('stage').getBoundingClientRect();
          const rect = box && box.getBoundingClientRect();
          return {tasks, label: box && box.textContent,
                  box: rect && [rect.left - stage.left, rect.top - stage.top, rect.width, rect.height],
                  stage: [stage.width, stage.height]};
        });
        """
    )


def _save_screenshot(driver: Any, out: Path) -> None:
    """A small PNG (a 128-colour palette keeps the README's picture well under 200 KB)."""
    from PIL import Image

    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)


def test_photo_answers_are_drawn_as_the_server_gives_them(page: Any, server: Server, astronaut: Path,
                                                           tmp_path: Path) -> None:
    assert _upload(page, astronaut) == "done", page.find_element("id", "error").text
    expected = _server_answer(server, astronaut)
    shown = _shown(page)
    assert len(shown) == len(expected) == 1
    width, height = 512, 512  # the astronaut's size; the picture is shown at its own size here
    for face, seen in zip(expected, shown, strict=True):
        for task, answer in face["predictions"].items():
            assert seen["tasks"][task]["label"] == answer["label"]
            rows = seen["tasks"][task]["rows"]
            assert [r[0] for r in rows] == list(answer["probabilities"])
            for name, probability, text in rows:
                assert probability == pytest.approx(answer["probabilities"][name], abs=1e-9)
                assert text == f"{100 * answer['probabilities'][name]:.1f}%"
        assert seen["label"] == f"1: {face['predictions']['emotion']['label']}"
        assert seen["stage"] == pytest.approx([width, height], abs=1)
        assert seen["box"] == pytest.approx(face["box"], abs=1.5)
    assert page.find_element("id", "status").text == "1 face found."
    assert page.find_element("id", "limitation").is_displayed()
    assert _severe_console(page) == []
    _save_screenshot(page, tmp_path / "page.png")
    if os.environ.get("FER_MTL_WRITE_PAGE_PNG"):
        page.set_window_size(1000, 1150)
        _save_screenshot(page, ROOT / "docs" / "page.png")


def test_a_picture_the_browser_cannot_show_still_gets_its_answers(page: Any, server: Server, astronaut: Path,
                                                                   tmp_path: Path) -> None:
    from PIL import Image

    tiff = tmp_path / "astronaut.tiff"  # the server reads TIFF; Chromium cannot display it
    Image.open(astronaut).save(tiff, format="TIFF", compression="tiff_deflate")  # under the 1 MiB body limit
    assert _upload(page, tiff) == "done", page.find_element("id", "error").text
    assert page.find_element("id", "status").text == "1 face found. This browser cannot display the picture itself."
    ((face,), (seen,)) = _server_answer(server, tiff), _shown(page)
    assert {t: v["label"] for t, v in seen["tasks"].items()} == {t: v["label"] for t, v in face["predictions"].items()}
    assert not page.find_element("id", "stage").is_displayed()


@pytest.mark.parametrize(
    ("name", "content", "status"),
    [("notes.txt", b"this is not a photo\n", 400), ("huge.jpg", b"\xff\xd8\xff" + b"\0" * (MAX_BODY_MB << 20), 413)],
)
def test_a_bad_upload_shows_the_servers_reason(page: Any, server: Server, tmp_path: Path, name: str,
                                               content: bytes, status: int) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    reply = _post_like_the_page(server, content)
    assert reply.status_code == status
    assert _upload(page, path) == "error"
    error = page.find_element("id", "error")
    assert error.is_displayed() and error.get_attribute("role") == "alert"
    assert error.text == f"The server refused the image (HTTP {status}): {reply.json()['error']}"
    assert "Traceback" not in page.page_source
    assert page.find_elements("css selector", "#faces > li") == []
    _save_screenshot(page, tmp_path / f"refused-{status}.png")


def test_keyboard_reaches_every_control_and_each_has_a_label(page: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    focused = []
    for _ in range(3):
        ActionChains(page).send_keys(Keys.TAB).perform()
        focused.append(page.switch_to.active_element.get_attribute("id"))
    assert focused == ["file", "camera-toggle", "interval"]
    for control in ("file", "interval"):
        assert page.find_element("css selector", f'label[for="{control}"]').text
    assert page.find_element("id", "camera-toggle").get_attribute("aria-pressed") == "false"


def test_fits_a_phone_screen(page: Any, server: Server, astronaut: Path, tmp_path: Path) -> None:
    page.set_window_size(390, 844)
    assert _upload(page, astronaut) == "done"
    overflow = page.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    (seen,) = _shown(page)
    scale = seen["stage"][0] / 512
    assert 0 < scale < 1  # the picture was scaled down to fit
    # The box still sits on the face: its placement is relative to the picture's own size.
    (face,) = _server_answer(server, astronaut)
    assert seen["box"] == pytest.approx([v * scale for v in face["box"]], abs=1.5)
    _save_screenshot(page, tmp_path / "phone.png")


def test_webcam_snapshots_are_sent_while_it_is_on(page: Any) -> None:
    toggle = page.find_element("id", "camera-toggle")
    page.find_element("id", "interval").clear()
    page.find_element("id", "interval").send_keys("500")
    toggle.click()
    _wait_state(page, "done", "error")
    status = page.find_element("id", "status").text
    assert status.startswith("Webcam: "), page.find_element("id", "error").text
    assert toggle.get_attribute("aria-pressed") == "true"
    assert page.find_element("id", "camera").is_displayed()
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "false"
    assert page.find_element("id", "status").text == "Webcam off."
    assert _severe_console(page) == []
