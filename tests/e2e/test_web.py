"""The gateway's web pages in a real browser: Debian's chromium driven by Playwright (never a
downloaded browser), against a real gateway process serving the full model as champion and
challenger.

A digit drawn with mouse strokes and an uploaded photo are read right, with the 28x28 image the
network saw; a correction lands in the inference log; without a key the page says so and nothing
is scored; the pages load nothing from anywhere but the gateway and never hold a key; the
operations page shows a split change made with the CLI and makes one itself; a phone-sized screen
has no horizontal scrolling; the try-it page works from the keyboard alone; a champion moved by
hand in the real MLflow UI takes the traffic, by webhook, with no failed request. Screenshots of each page go to
``build/screenshots`` (listed at the end of the test run)."""

from __future__ import annotations

import base64
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from mlflow import MlflowClient
from playwright import sync_api as playwright

from mnist_mlops.registry import history
from tests.conftest import LoggedModel
from tests.e2e.gateway_helpers import samples, start_gateway, store_with
from tests.helpers import PROJECT_ROOT, free_port, start_process, stop_process, subprocess_env, wait_for_http

PHOTO = PROJECT_ROOT / "examples" / "photo-of-a-3.jpg"
SCREENSHOTS = PROJECT_ROOT / "build" / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
WEBHOOK_SECRET = "web-test-webhook-secret-0123456789"
WAIT_MS = 60_000  # for an answer: the first request of a backend may take seconds on a slow machine


@pytest.fixture(scope="module")
def gateway(trained_store, full_model_path, tmp_path_factory):
    directory = tmp_path_factory.mktemp("web")
    full = LoggedModel(str(full_model_path), "", 0.0)
    uri = store_with(trained_store, directory, full, full)
    # Polling once an hour: an alias moved in the MLflow UI reaches the gateway by webhook.
    running = start_gateway(
        uri,
        directory,
        "--split",
        "champion=80,challenger=20",
        "--poll_interval",
        "3600",
        environment={"MNIST_WEBHOOK_SECRET": WEBHOOK_SECRET},
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test` installs it from Debian's packages (make system-deps)"
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=chromium)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, gateway):
    """A new tab (its own context: nothing of another test's tab), every request it makes
    recorded in ``page.requested``."""
    context = browser.new_context(viewport=DESKTOP)
    tab = context.new_page()
    tab.requested = []
    tab.on("request", lambda request: tab.requested.append(request.url))
    tab.set_default_timeout(WAIT_MS)
    yield tab
    context.close()


def open_page(page, gateway, path: str = "/", key: str | None = None) -> None:
    page.goto(f"{gateway.url}{path}")
    if key is not None:
        page.fill("#key", key)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#key-status:has-text('A key is set')")


def answered(page) -> int:
    """How many answers (or refusals) the try-it page has shown."""
    return int(page.evaluate("document.body.dataset.answers || '0'"))


def read(page, action) -> str:
    """Do ``action`` (which sends a digit) and wait for the page's answer: the label shown."""
    before = answered(page)
    action()
    page.wait_for_selector(f"body[data-answers='{before + 1}']")  # a selector: the pages' CSP forbids eval
    return page.inner_text("#label")


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Mouse strokes on the drawing pad, in fractions of its size."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        (x0, y0), rest = stroke[0], stroke[1:]
        page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=4)
        page.mouse.up()


def ellipse(cx: float, cy: float, rx: float, ry: float, points: int = 40) -> list[tuple[float, float]]:
    import math

    return [
        (cx + rx * math.sin(2 * math.pi * i / points), cy - ry * math.cos(2 * math.pi * i / points))
        for i in range(points + 1)
    ]


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def seen_ink(page) -> float:
    """The mean brightness of the 28x28 preview (0: nothing drawn on it)."""
    return page.evaluate(
        """() => {
            const data = document.querySelector('#seen').getContext('2d').getImageData(0, 0, 28, 28).data;
            let sum = 0;
            for (let i = 0; i < data.length; i += 4) sum += data[i];
            return sum / (255 * 28 * 28);
        }"""
    )


def scored(gateway) -> float:
    metrics = httpx.get(f"{gateway.url}/metrics", headers=gateway.headers(), timeout=10).text
    return sum(sample.value for sample in samples(metrics, "gateway_requests_total", status="200"))


def test_a_digit_drawn_with_mouse_strokes_is_read(page, gateway):
    open_page(page, gateway, key=gateway.predict_key)
    assert read(page, lambda: draw(page, [ellipse(0.5, 0.5, 0.2, 0.3)])) == "0"  # read once the stroke ends
    assert seen_ink(page) > 0.05
    page.click("#clear")
    seven = [[(0.3, 0.25), (0.7, 0.25), (0.45, 0.8)]]  # the bar, then the stem
    assert read(page, lambda: draw(page, seven)) == "7"
    assert read(page, lambda: page.click("#read")) == "7"  # the button reads the same drawing again
    assert page.locator("#bars li").count() == 10
    screenshot(page, "try-drawn-7")


def test_an_uploaded_photo_is_read_with_what_the_network_saw_and_a_correction_is_logged(page, gateway):
    open_page(page, gateway, key=gateway.admin_key)  # an admin key is told which variant answered
    assert read(page, lambda: page.set_input_files("#upload", str(PHOTO))) == "3"
    assert seen_ink(page) > 0.05
    assert "confidence" in page.inner_text("#confidence")
    who = page.inner_text("#who")
    assert "Answered by champion, model version" in who or "Answered by challenger, model version" in who
    request_id = who.rsplit("Request ", 1)[1].rstrip(".")
    screenshot(page, "try-photo-of-a-3")
    page.select_option("#truth", "5")
    page.click("#feedback button[type=submit]")
    page.wait_for_selector("#feedback-status:has-text('recorded that it was a 5')")
    with sqlite3.connect(Path(gateway.log.parent) / "mnist-inference.db") as log:
        assert log.execute("SELECT label FROM feedback WHERE request_id = ?", (request_id,)).fetchall() == [(5,)]
    page.click("#feedback button[type=submit]")  # the same correction twice: the gateway's own refusal
    page.wait_for_selector("#feedback-status:has-text('already recorded')")


def test_without_a_key_the_page_says_so_and_nothing_is_scored(page, gateway):
    before = scored(gateway)
    open_page(page, gateway)
    page.set_input_files("#upload", str(PHOTO))
    page.wait_for_selector("#status:has-text('needs an API key')")
    assert page.inner_text("#label") == "–" and page.locator("#bars li").count() == 0
    assert scored(gateway) == before
    open_page(page, gateway, key="not-a-key-of-this-gateway")
    page.set_input_files("#upload", str(PHOTO))
    page.wait_for_selector("#status:has-text('refused this key')")
    assert scored(gateway) == before


def test_the_pages_load_nothing_from_elsewhere_and_never_hold_a_key(page, gateway):
    for path in ("/", "/ops"):
        served = httpx.get(f"{gateway.url}{path}", timeout=10)
        assert served.status_code == 200 and "default-src 'none'" in served.headers["content-security-policy"]
        assert not any(key in served.text for key in gateway.keys.values())
    open_page(page, gateway, key=gateway.predict_key)
    assert read(page, lambda: page.set_input_files("#upload", str(PHOTO))) == "3"
    open_page(page, gateway, "/ops", key=gateway.admin_key)
    page.wait_for_selector("body[data-loaded=true]")
    outside = [url for url in page.requested if not url.startswith((gateway.url, "data:", "blob:"))]
    assert not outside, outside
    html = page.content()
    assert gateway.admin_key not in html and gateway.predict_key not in html
    other = page.context.browser.new_context().new_page()  # another tab's storage: no key there
    other.goto(f"{gateway.url}/ops")
    assert other.evaluate("sessionStorage.length") == 0
    other.context.close()
    assert httpx.get(f"{gateway.url}/static/..%2Fapp.py", timeout=10).status_code == 404
    assert httpx.get(f"{gateway.url}/static/nothing.js", timeout=10).json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    unsigned = httpx.post(f"{gateway.url}/hooks/mlflow", content=b"{}", timeout=10)
    assert unsigned.status_code == 401 and "X-MLflow-Signature" in unsigned.json()["message"]


def test_the_ops_page_shows_a_split_changed_with_the_cli_and_changes_it_itself(page, gateway):
    open_page(page, gateway, "/ops", key=gateway.predict_key)
    page.wait_for_selector("#status:has-text('may not do that')")  # a predict key sees no operations
    open_page(page, gateway, "/ops", key=gateway.admin_key)
    page.wait_for_selector("#variants tr[data-alias=challenger]")
    weight = page.locator("#variants tr[data-alias=challenger] td").nth(1)
    assert weight.inner_text() == "20"
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_mlops.serve.gateway.cli",
            "split",
            "champion=50,challenger=50",
            "--url",
            gateway.url,
        ],
        env=subprocess_env(gateway.uri, MNIST_API_KEY=gateway.admin_key),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    playwright.expect(weight).to_have_text("50", timeout=10_000)  # within a refresh or two
    assert page.locator("#decision").inner_text().startswith("Decision:")
    headers = page.locator("#arms thead th").all_inner_texts()
    assert "uncertain" in headers  # the share of answers a person should check, per arm
    for arm in page.locator("#arms tbody tr").all():
        assert arm.locator("th, td").count() == len(headers)
    screenshot(page, "ops")
    page.fill("#weight-challenger", "10")
    page.fill("#weight-champion", "90")
    page.click("#split-form button[type=submit]")
    page.wait_for_selector("#split-status:has-text('Split applied')")
    assert gateway.variants()["challenger"]["weight"] == 10
    playwright.expect(weight).to_have_text("10", timeout=10_000)


def test_what_the_registry_holds_is_shown_as_text_never_run_as_markup(page, gateway):
    """A promotion's reason is anyone's text with EDIT on the model: on the page it stays text."""
    marker = '<img src="x" id="injected"><script>document.title = "owned"</script>'
    client = MlflowClient(gateway.uri, gateway.uri)
    history.append(client, "mnist-cnn", history.Event(history.now_iso(), "mallory", "promote", "x", None, "1", marker))
    open_page(page, gateway, "/ops", key=gateway.admin_key)
    page.wait_for_selector("#history td:has-text('mallory')", timeout=20_000)  # within the cache's 5 s
    assert marker in page.inner_text("#history")
    assert page.locator("#injected").count() == 0 and page.title() != "owned"


@pytest.mark.parametrize("path", ["/", "/ops"])
def test_a_phone_sized_screen_needs_no_horizontal_scrolling(browser, gateway, path):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    tab = context.new_page()
    open_page(tab, gateway, path, key=gateway.admin_key)
    if path == "/ops":
        tab.wait_for_selector("body[data-loaded=true]")
    else:
        assert read(tab, lambda: tab.set_input_files("#upload", str(PHOTO))) == "3"
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(tab, f"phone{path.replace('/', '-') or '-'}".rstrip("-") or "phone")
    context.close()


def tab_to(page, element_id: str, presses: int = 25) -> None:
    """Press Tab until the element ``element_id`` has the focus (fails if it never gets it)."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} cannot be reached with the Tab key")


# Clicks that reach the window on #upload, trusted and not cancelled by the page: what the browser
# does when the keyboard activates a file input, and what opens its file chooser.
UPLOAD_ACTIVATIONS = """window.addEventListener("click", (event) => {
  if (event.target.id === "upload") {
    (window.uploadActivations = window.uploadActivations || []).push(event.isTrusted && !event.defaultPrevented);
  }
});"""


def watch_upload(page) -> tuple[list, list[str]]:
    """The file choosers the page opens and its console's lines, from now on; activations of
    ``#upload`` are recorded in the page (``UPLOAD_ACTIVATIONS``).

    Playwright has the browser hand it file choosers once the first listener is added, without
    waiting for that to take effect (``expect_file_chooser`` around a key press races it): the
    listener is added here, before the page loads, long before a key is pressed."""
    choosers, console = [], []
    page.on("filechooser", lambda chooser: choosers.append(chooser))
    page.on("console", lambda message: console.append(message.text))
    page.add_init_script(UPLOAD_ACTIVATIONS)
    return choosers, console


def choose_with_keyboard(page, choosers: list, console: list[str], path: Path) -> None:
    """Space on the focused file input, else Enter (each given 15 s): the browser activates it and
    Playwright gets its file chooser, which is given ``path``.

    On a loaded CI machine the chooser has twice never reached Playwright. When the keyboard did
    activate the input (a trusted click the page did not cancel, which is what opens a chooser),
    the file is then set on the input directly. The page's part, reaching and operating the
    control from the keyboard, is still checked, and it fails if no key activates the input."""
    for key in ("Space", "Enter"):
        page.keyboard.press(key)
        deadline = time.monotonic() + 15
        while not choosers and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        if choosers:
            choosers.pop().set_files(str(path))
            return
        assert page.evaluate("document.activeElement.id") == "upload"
        if True in page.evaluate("window.uploadActivations || []"):
            page.set_input_files("#upload", str(path))
            return
    raise AssertionError(f"neither Space nor Enter activated the focused #upload; console: {console}")


def test_the_try_page_works_from_the_keyboard_alone(page, gateway):
    choosers, console = watch_upload(page)
    page.goto(gateway.url)
    page.keyboard.press("Tab")  # the first control: the operations link, then the key field
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "key"
    page.keyboard.type(gateway.predict_key)
    page.keyboard.press("Enter")
    page.wait_for_selector("#key-status:has-text('A key is set')")
    tab_to(page, "upload")
    before = answered(page)
    choose_with_keyboard(page, choosers, console, PHOTO)
    page.wait_for_selector(f"body[data-answers='{before + 1}']")
    assert page.inner_text("#label") == "3"
    tab_to(page, "right")
    page.keyboard.press("Enter")
    page.wait_for_selector("#feedback-status:has-text('recorded that it was a 3')")


def test_a_champion_moved_by_hand_in_the_mlflow_ui_takes_the_traffic_without_a_failed_request(
    browser, gateway, tmp_path
):
    """The MLflow UI started as ``make ui`` starts it, on the gateway's own store, sending its alias
    webhooks to the gateway (which polls once an hour); the version page's alias editor moves
    ``champion`` from v2 to v3 while a client keeps sending requests; the gateway follows on the
    webhook, with the gate on follow, and not one request fails."""
    ui_port = free_port()
    ui_url = f"http://127.0.0.1:{ui_port}"
    webhooks = {  # a receiver on loopback (docs/gateway.md)
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    ui = start_process(
        [sys.executable, "-m", "mnist_mlops.registry.ui", "--port", str(ui_port)],
        subprocess_env(gateway.uri, **webhooks),
        tmp_path / "ui.log",
    )
    load = Load(gateway)
    try:
        wait_for_http(f"{ui_url}/health", ui, timeout=120)
        command = [sys.executable, "-m", "mnist_mlops.serve.gateway.cli", "webhook", "register"]
        register = subprocess.run(
            [*command, "--url", gateway.url, "--tracking_uri", ui_url],
            env=subprocess_env(gateway.uri, MNIST_WEBHOOK_SECRET=WEBHOOK_SECRET),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert register.returncode == 0, register.stderr
        load.start()
        context = browser.new_context(viewport=DESKTOP)
        tab = context.new_page()
        tab.set_default_timeout(WAIT_MS)
        tab.goto(f"{ui_url}/#/models/mnist-cnn/versions/3")
        # The alias editor: a pencil once the version has an alias ("Add" before it has one).
        edit = tab.locator("button[data-component-id*='aliaseditor']").or_(tab.get_by_role("button", name="Add"))
        edit.first.click()
        editor = tab.get_by_role("dialog")
        aliases = editor.get_by_role("combobox")
        aliases.fill("champion")
        aliases.press("Enter")
        screenshot(tab, "mlflow-ui-alias-editor")
        editor.get_by_role("button", name="Save aliases").click()
        editor.wait_for(state="hidden")
        context.close()
        assert MlflowClient(gateway.uri, gateway.uri).get_registered_model("mnist-cnn").aliases["champion"] == 3
        deadline = time.monotonic() + 180
        while ("champion", "3") not in load.answered_by:
            assert time.monotonic() < deadline, f"the gateway did not follow: {gateway.variants()['champion']}"
            time.sleep(0.25)
    finally:
        load.stop()
        stop_process(ui)
    assert load.failures == [] and load.ok > 0, load.failures[:5]
    assert ("champion", "2") in load.answered_by  # the switch happened under this client's traffic
    metrics = httpx.get(f"{gateway.url}/metrics", headers=gateway.headers(), timeout=10).text
    assert sum(s.value for s in samples(metrics, "gateway_webhooks_total", outcome="accepted")) >= 1
    print(f"MLflow UI alias move under load: {load.ok} requests answered, {len(load.failures)} failed")


class Load:
    """A client sending the example photo back to back (admin key: told who answered) on a thread,
    recording every failure and every (variant, version) that answered."""

    def __init__(self, gateway) -> None:
        image = base64.b64encode(PHOTO.read_bytes()).decode()
        self.body = {"dataframe_split": {"columns": ["image"], "data": [[image]]}}
        self.gateway, self.ok, self.failures, self.answered_by = gateway, 0, [], set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(60)

    def _run(self) -> None:
        headers = self.gateway.headers(self.gateway.admin_key)
        with httpx.Client(timeout=60) as client:
            while not self._stopping.is_set():
                try:
                    answer = client.post(f"{self.gateway.url}/invocations", json=self.body, headers=headers)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if answer.status_code != 200:
                    self.failures.append(f"{answer.status_code}: {answer.text[:200]}")
                    continue
                self.ok += 1
                self.answered_by.add((answer.headers["X-Variant"], answer.headers["X-Model-Version"]))
