"""The real browser for the console's and /docs' tests: Debian's Chromium through its chromedriver (scripts/setup
installs both, and selenium), headless, with a fake microphone that says one question."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_SECONDS = 60
QUESTION = "What time does the last train leave tonight?"

needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists() and importlib.util.find_spec("selenium")),
    reason="needs chromium, chromium-driver and selenium (scripts/setup installs them)",
)


@pytest.fixture(scope="session")
def microphone_wav(
    tmp_path_factory: pytest.TempPathFactory, spoken_text: Callable[[str], tuple[np.ndarray, int]]
) -> Path:
    """What the fake microphone says, over and over: a question in the Piper voice (noise off)."""
    samples, rate = spoken_text(QUESTION)
    path = tmp_path_factory.mktemp("microphone") / "question.wav"
    sf.write(path, samples, rate, subtype="PCM_16")
    return path


@pytest.fixture
def browser(microphone_wav: Path) -> Iterator[Any]:
    """Headless Chromium with a fresh profile, talking only to 127.0.0.1."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1200,900", f"--user-data-dir={profile}",
        # A fake microphone that needs no permission prompt, saying QUESTION: the voices and try-it tabs record it.
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone_wav}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, for CSP violations
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: Any, script: str, what: str) -> Any:
    """Wait (bounded) until the JavaScript expression ``script`` is truthy; its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.2).until(
        lambda d: d.execute_script(f"return {script};"), message=f"waiting for {what}"
    )
