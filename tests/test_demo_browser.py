"""`t2i demo` in a real browser (issue 27): the real command as a subprocess on a free port,
driven by Playwright in headless Chromium (Debian's, which scripts/setup.sh installs). A
caption gives a non-blank grid of the expected size; an empty caption, a 10,000-character
caption, w = 1e9 and guidance on a model that cannot be guided each show a clear line in the
page; the server answers afterwards. A label model with an ex-post density offers the sampler
choice, and expost draws the API's pixels. Without Gradio the command says how to install it."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from .conftest import REPO, run_env
from .test_api import GUIDED_LABEL, GUIDED_TEXT, small_run


@pytest.fixture(scope="module")
def trained(finished_root_run):
    return small_run(finished_root_run)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def demo(trained, tmp_path_factory):
    """`t2i demo` serving the small run's models, the guidable text model first."""
    port, logs = free_port(), tmp_path_factory.mktemp("demo") / "demo.log"
    command = ["t2i", "demo", "--models", str(trained.models), "--port", str(port)]
    command += ["--model", str(trained.models / GUIDED_TEXT), "--params", str(trained.params)]
    with open(logs, "wb") as log:
        server = subprocess.Popen(command, cwd=trained.repo, env=run_env(), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180  # importing gradio and torch on a busy CI machine
    try:
        while not answers(url):
            assert server.poll() is None, logs.read_text()
            assert time.monotonic() < deadline, logs.read_text()
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def page(demo):
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium not installed (scripts/setup.sh installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        tab = browser.new_page()
        tab.goto(demo)
        yield tab
        browser.close()


def click_and_read_status(page, previous: str) -> str:
    page.get_by_role("button", name="Generate").click()
    status = page.locator("#status textarea")
    page.wait_for_function(
        "old => { const v = document.querySelector('#status textarea').value;"
        " return v && v !== old; }",
        arg=previous,
        timeout=60_000,
    )
    return status.input_value()


def test_a_caption_draws_a_grid_and_bad_inputs_show_a_line_in_the_page(page, demo):
    page.get_by_label("caption or label").fill("white running shoes")
    status = click_and_read_status(page, "")
    assert status == "8 images of fmnist_text_prior, w 0, T 1, seed 0"
    image = page.locator("#output img")
    image.wait_for(state="visible")
    with urllib.request.urlopen(image.get_attribute("src"), timeout=30) as response:
        grid = Image.open(io.BytesIO(response.read()))
    assert grid.size == (8 * 58 + 2, 58 + 2)  # 8 tiles of 28 px at 2x, 2 px gaps
    assert np.asarray(grid.convert("L"))[2:58, 2:58].std() > 1  # drawn, not blank

    page.get_by_label("caption or label").fill("")
    status = click_and_read_status(page, status)
    assert status == "error: caption: caption '' is empty"

    page.get_by_label("caption or label").fill("x" * 10_000)
    status = click_and_read_status(page, status)
    assert status == "error: caption: caption of 10,000 characters, more than 2,000; shorten it"

    page.get_by_label("caption or label").fill("a long summer dress")
    page.get_by_label("guidance w").fill("1e9")
    status = click_and_read_status(page, status)
    assert status == "error: guidance 1e+09: expected w from 0 to 20"

    page.get_by_label("guidance w").fill("2")
    page.get_by_label("negative caption (or label); needs w > 0").fill("a pair of trousers")
    status = click_and_read_status(page, status)
    assert status == "8 images of fmnist_text_prior, w 2, T 1, seed 0"

    page.get_by_label("model").click()  # a model trained without the null condition
    page.get_by_role("option", name="fmnist_text", exact=True).click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('textarea')].some(t => t.value.startsWith("
        "'fmnist_text: '))",
        timeout=60_000,
    )
    status = click_and_read_status(page, status)
    assert status.startswith("error: ") and status.endswith(
        "trained without a null condition (cond_null_p 0): it cannot be guided; use guidance 0"
    )
    assert answers(demo)  # the server still serves


def test_the_sampler_choice_appears_for_a_model_with_a_density(page):
    """The text model shown first has no ex-post density: no sampler choice. A label model
    with one offers prior and expost, and expost draws."""
    sampler = page.locator("#sampler")
    assert not sampler.is_visible()
    page.get_by_label("model").click()
    page.get_by_role("option", name=GUIDED_LABEL, exact=True).click()
    sampler.wait_for(state="visible", timeout=60_000)
    page.get_by_label("expost").check()
    page.get_by_label("caption or label").fill("sneaker")
    status = click_and_read_status(page, "")
    assert status == f"8 images of {GUIDED_LABEL}, w 0, T 1, seed 0, sampler expost"


def test_the_page_handler_draws_the_apis_expost_pixels(trained):
    """The handler every click runs, called as Gradio calls it: expost on a label model is
    the API's grid; on a text model, one line; the sampler choice shows only with a density."""
    from pipeline.api import grid, load
    from pipeline.demo import Session

    session = Session(trained.params)
    label, text = str(trained.models / GUIDED_LABEL), str(trained.models / GUIDED_TEXT)
    about, choice = session.about(label)
    assert about.startswith(f"{GUIDED_LABEL}: ") and "expost" in about
    assert (choice["choices"], choice["value"], choice["visible"]) == (
        ["prior", "expost"],
        "prior",
        True,
    )
    image, status = session.draw(label, "sneaker", "", "expost", 1.0, 0.8, 3, 4)
    assert status == f"4 images of {GUIDED_LABEL}, w 1, T 0.8, seed 3, sampler expost"
    m = load(label, trained.params)
    want = m.generate(["sneaker"], 4, guidance=1.0, temperature=0.8, seed=3, sampler="expost")
    np.testing.assert_array_equal(np.asarray(image), np.asarray(grid(want, 4)))
    assert session.about(text)[1]["visible"] is False
    image, status = session.draw(text, "white running shoes", "", "expost", 0, 1, 0, 2)
    assert image is None and status.startswith(f"error: {text}: a text model; sampler expost")


def test_without_gradio_the_command_says_how_to_install_it(tmp_path):
    """gradio made unimportable for this one process (None in sys.modules is what Python
    itself uses to block an import)."""
    code = "import sys; sys.modules['gradio'] = None; from stages.cli import app; app()"
    result = subprocess.run(
        [sys.executable, "-c", code, "demo", "--models", str(tmp_path)],
        cwd=REPO,
        env=run_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: t2i demo needs gradio: pip install -e '.[demo]'"
