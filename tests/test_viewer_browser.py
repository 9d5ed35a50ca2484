"""`distill view` in a real browser: Debian's headless Chromium driven by selenium.

One `distill view` process and one browser session serve the whole module. Screenshots land in
the test's temporary folder (printed with -s). Chromium is required, never skipped: `.ci/run`
installs it (`apt-get install chromium chromium-driver`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from trainer_fixtures import tiny_model  # noqa: F401 - fixture viewer_data uses
from viewer_fixtures import MARKER, ViewerData, viewer_data  # noqa: F401 - fixture

from distill.trainer.batches import load_split
from distill.trainer.render import MaskedTokens, load_tokenizer
from distill.viewer.catalog import discover
from distill.viewer.learn import SplitLocator, Tokenizers, student_view

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
URL_LINE = re.compile(r"distill view: (http://127\.0\.0\.1:\d+/)")


@pytest.fixture(scope="module")
def server(viewer_data: ViewerData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`distill view RUNS --port 0 --no-open` as a user starts it; yields the URL it prints."""
    indexes = tmp_path_factory.mktemp("view-indexes")
    process = subprocess.Popen(
        [sys.executable, "-m", "distill", "view", str(viewer_data.root / "runs"), "--port", "0", "--no-open",
         "--index-dir", str(indexes)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"},
    )
    assert process.stdout is not None
    seen = []
    url = None
    for line in process.stdout:  # the URL line comes once the socket listens
        seen.append(line)
        if match := URL_LINE.search(line):
            url = match.group(1)
            break
    assert url, f"distill view never printed its URL:\n{''.join(seen)}"
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: the viewer's browser tests need Debian's Chromium "
            "(apt-get install -y chromium chromium-driver; .ci/run does this)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1300,1000", "--hide-scrollbars"):
        options.add_argument(argument)
    # An explicit driver path: Selenium Manager never runs, so nothing is downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(10)  # elements are waited for, not slept for
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("viewer-screenshots")
    print(f"screenshots: {folder}")
    return folder


def shoot(driver: object, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    return path


def test_filter_the_conversations(browser: object, server: str, shots: Path, viewer_data: ViewerData) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = browser
    driver.get(server + "runs/viewer-run/records")  # type: ignore[attr-defined]
    rows = driver.find_elements(By.CSS_SELECTOR, "#records tbody tr")  # type: ignore[attr-defined]
    assert len(rows) == len(viewer_data.records) + 1  # and the dead letter
    Select(driver.find_element(By.NAME, "status")).select_by_value("tool_limit")  # type: ignore[attr-defined]
    driver.find_element(By.CSS_SELECTOR, "form.filters button").click()  # type: ignore[attr-defined]
    WebDriverWait(driver, 20).until(lambda d: "status=tool_limit" in d.current_url)
    rows = driver.find_elements(By.CSS_SELECTOR, "#records tbody tr")  # type: ignore[attr-defined]
    assert [row.find_element(By.CSS_SELECTOR, "td.prompt a").text for row in rows] == ["Explain parse_settings completely."]
    shoot(driver, shots, "records-filtered")
    driver.find_element(By.LINK_TEXT, "clear").click()  # type: ignore[attr-defined]
    search = driver.find_element(By.NAME, "q")  # type: ignore[attr-defined]
    search.send_keys(MARKER.upper())
    search.submit()
    WebDriverWait(driver, 20).until(lambda d: "q=" in d.current_url)
    assert driver.find_element(By.ID, "total").text == "1"  # type: ignore[attr-defined]
    shoot(driver, shots, "records-search")


def test_open_a_conversation_unfold_a_result_and_see_script_as_text(
    browser: object, server: str, shots: Path, viewer_data: ViewerData
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(server + "runs/viewer-run/records")  # type: ignore[attr-defined]
    driver.find_element(By.LINK_TEXT, f"Where is {MARKER} used?").click()  # type: ignore[attr-defined]
    tools = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".call .tool")]  # type: ignore[attr-defined]
    assert tools == ["grep", "read_file"]
    # The tool result holding <script> is text on the page, and it never ran.
    grep_result = driver.find_element(By.CSS_SELECTOR, ".call .result pre").text  # type: ignore[attr-defined]
    assert '<script>document.title = "pwned"; window.pwned = 1;</script>' in grep_result
    assert driver.execute_script("return window.pwned === undefined")  # type: ignore[attr-defined]
    assert driver.title != "pwned"  # type: ignore[attr-defined]
    # The 40-line file is folded until asked for.
    rest = driver.find_element(By.CSS_SELECTOR, "details.fold pre.rest")  # type: ignore[attr-defined]
    assert not rest.is_displayed()
    driver.find_element(By.CSS_SELECTOR, "details.fold summary").click()  # type: ignore[attr-defined]
    assert rest.is_displayed() and "line 40: filler text" in rest.text
    shoot(driver, shots, "conversation")
    driver.get(server + "runs/viewer-run/dead/1")  # type: ignore[attr-defined]
    assert "teacher timed out" in driver.find_element(By.ID, "dead-reason").text  # type: ignore[attr-defined]
    shoot(driver, shots, "dead-letter")


def test_see_what_the_student_learns(browser: object, server: str, shots: Path, viewer_data: ViewerData) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    line = viewer_data.line_of("t-script")
    driver.get(server + f"runs/viewer-run/conversation/{line}")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "learn-link").click()  # type: ignore[attr-defined]
    trained = driver.find_elements(By.CSS_SELECTOR, "#tokens span.trained")  # type: ignore[attr-defined]
    masked = driver.find_elements(By.CSS_SELECTOR, "#tokens span.masked")  # type: ignore[attr-defined]
    # The trainer's own view of the same line: what it loads and which tokens its loss counts.
    catalog = discover([viewer_data.root / "runs"])
    convert = catalog.run("viewer-run").convert
    view = student_view(viewer_data.records[line - 1], SplitLocator(convert), Tokenizers(), None)
    tokenizer = load_tokenizer(viewer_data.model)
    tokens, mask = load_split(convert.split_path(view.split), tokenizer, max_seq_length=100_000)[view.line - 1]
    assert len(trained) + len(masked) == len(tokens)
    assert len(trained) == int(mask[1:].sum())
    expected = "".join(MaskedTokens(text="", tokens=tokens.tolist(), mask=mask.tolist()).trained_text(tokenizer))
    shown = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('#tokens span.trained')).map(s => s.textContent).join('')"
    )
    assert shown == expected
    # Highlighted and dimmed as drawn, not only as classes.
    colours = driver.execute_script(  # type: ignore[attr-defined]
        "const s = q => getComputedStyle(document.querySelector(q));"
        "return [s('#tokens span.trained').backgroundColor, s('#tokens span.masked').backgroundColor,"
        " s('#tokens span.masked').color];"
    )
    assert colours[0] != colours[1] and colours[2] != "rgb(29, 35, 43)"
    driver.find_element(By.LINK_TEXT, "jump to the first trained token").click()  # type: ignore[attr-defined]
    shoot(driver, shots, "student-learns")


def test_eval_side_by_side(browser: object, server: str, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(server)  # type: ignore[attr-defined]
    driver.find_element(By.LINK_TEXT, "eval: adapter").click()  # type: ignore[attr-defined]
    headers = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#eval-prompts thead th")]  # type: ignore[attr-defined]
    assert headers == ["prompt", "base", "adapter", "teacher"]
    first = driver.find_elements(By.CSS_SELECTOR, "#eval-prompts tbody tr")[0].text  # type: ignore[attr-defined]
    assert "I think it is <b>somewhere</b>." in first and "In config.py." in first
    shoot(driver, shots, "eval")
    driver.get(server + "runs/viewer-run")  # type: ignore[attr-defined]
    shoot(driver, shots, "run")
