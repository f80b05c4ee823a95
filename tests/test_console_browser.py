"""The console driven in a real browser: Debian's Chromium through its chromedriver (scripts/setup installs both).

Screenshots of each tab are kept in out/console-screenshots/ (git-ignored; the path is printed);
``AI_TELEPHONE_UPDATE_SCREENSHOT=1`` also copies the status tab to docs/console.png for the README.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import soundfile as sf

from cloud_server.tts.base import TTSEngine
from tests.fixtures_browser import WAIT_SECONDS, needs_chromium, wait_for
from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.ollama_standin import OllamaStandIn
from tests.test_emotions import ListeningVoice

REPO_ROOT = Path(__file__).resolve().parent.parent
pytestmark = needs_chromium


@pytest.fixture(scope="session")
def shots() -> Path:
    """Where the screenshots of each tab are kept after the run: out/console-screenshots/ (git-ignored), emptied once
    per test session so it holds only this run's pictures."""
    folder = REPO_ROOT / "out" / "console-screenshots"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"console screenshots: {folder}")
    return folder


HEARD = (
    "(() => { const m = document.getElementById('try-status').textContent.match(/([0-9.]+) s heard/);"
    " return m && Number(m[1]) > 0 ? Number(m[1]) : null; })()"
)
"""Seconds of the try-it reply the page says it has played so far (null before any)."""


def test_sign_in_see_status_create_a_character_hear_it_and_sign_out(
    start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Path, browser: Any, shots: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    ollama.script("Good evening from the moon. ", "The night is calm and clear.")
    # The LLM's pause (below) may outlast the usual 5 s read timeout on a busy machine: never an apology here.
    server = start_server(server_config(ollama.url, tmp_path, llm={"timeout_seconds": WAIT_SECONDS}))
    pages: list[str] = []

    browser.get(server.url + "/")
    browser.save_screenshot(str(shots / "sign-in.png"))
    browser.find_element(By.ID, "key").send_keys(TEST_KEY)
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()
    wait_for(browser, "document.getElementById('voice-engine')", "the status tab")
    assert browser.find_element(By.ID, "voice-engine").text == "piper"
    assert browser.find_element(By.ID, "health-status").text in ("ok", "degraded")
    assert browser.execute_script("return document.cookie") == ""  # the session cookie is HttpOnly
    pages.append(browser.page_source)
    browser.save_screenshot(str(shots / "status-empty.png"))

    browser.find_element(By.LINK_TEXT, "Characters").click()
    wait_for(browser, "document.getElementById('new-character')", "the characters tab")
    browser.find_element(By.ID, "new-id").send_keys("luna")
    browser.find_element(By.ID, "new-display_name").send_keys("Luna")
    exaggeration = browser.find_element(By.ID, "new-exaggeration")
    exaggeration.clear()
    exaggeration.send_keys("0.9")
    browser.find_element(By.CSS_SELECTOR, "#new-character button[type=submit]").click()
    wait_for(browser, "document.getElementById('character-luna')", "Luna in the list")
    pages.append(browser.page_source)
    browser.save_screenshot(str(shots / "characters.png"))
    luna = server.services.characters.get("luna")[1]
    assert (luna.display_name, luna.exaggeration) == ("Luna", 0.9)

    browser.find_element(By.LINK_TEXT, "Try it").click()
    wait_for(browser, "document.getElementById('try-form')", "the try-it tab")
    for line in ("Hello, who is this?", "What is the weather up there?"):
        more = threading.Event()  # the LLM holds its second sentence until the page is heard playing the first
        ollama.script("Good evening from the moon. ", more, "The night is calm and clear.")
        Select(browser.find_element(By.ID, "try-character")).select_by_value("luna")
        text = browser.find_element(By.ID, "try-text")
        text.clear()
        text.send_keys(line)
        browser.find_element(By.ID, "try-speak").click()
        heard_early = wait_for(browser, HEARD, "the first sentence to be heard")
        chat = ollama.chat_requests()[-1]
        assert not chat.completed, "the page played only after the whole reply had come"
        more.set()
        wait_for(browser, "document.getElementById('try-reply').textContent.includes('night is calm')", "the reply")
        wait_for(browser, "document.getElementById('try-status').dataset.state === 'played'", "the reply played out")
        assert wait_for(browser, HEARD, "the whole reply heard") > max(heard_early, 1.0)  # both sentences
    browser.execute_script("document.getElementById('reply-audio').play()")  # hear it again
    assert playable(browser, "#reply-audio", "the reply to play again")["duration"] > 1.0
    pages.append(browser.page_source)
    browser.save_screenshot(str(shots / "try-it.png"))

    browser.find_element(By.LINK_TEXT, "Status").click()
    wait_for(browser, "document.querySelectorAll('#calls tr.call').length === 2", "both calls on the status tab")
    assert "What is the weather up there?" in browser.find_element(By.ID, "calls").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#latency-chart rect.bar-total")) == 2
    ollama.script("The tide is in. ", "The boats are home.")
    phoned = requests.post(server.url + "/process-text", json={"text": "Is the tide in?"},
                           headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=WAIT_SECONDS)
    assert phoned.status_code == 200
    wait_for(browser, "document.querySelectorAll('#calls tr.call').length === 3", "a phone's call, live")
    assert "Is the tide in?" in browser.find_element(By.ID, "calls").text
    news = wait_for(browser, "document.getElementById('status-news').textContent", "the new call announced")
    assert news.startswith("New call 3 to operator: heard “Is the tide in?”")  # to screen readers, once
    pages.append(browser.page_source)
    browser.save_screenshot(str(shots / "status.png"))
    if os.environ.get("AI_TELEPHONE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shots / "status.png", REPO_ROOT / "docs" / "console.png")

    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []  # e.g. nothing the Content-Security-Policy refused (htmx's eval or inline styles)

    storage = browser.execute_script(
        "return JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    cookies = browser.get_cookies()
    assert [c["name"] for c in cookies] == ["ai_telephone_console"]
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    for where in [*pages, storage, repr(cookies)]:
        assert TEST_KEY not in where

    browser.find_element(By.ID, "sign-out").click()
    wait_for(browser, "document.getElementById('sign-in-form')", "the sign-in form")
    assert browser.get_cookies() == []
    browser.get(server.url + "/console/try")
    assert browser.find_elements(By.ID, "sign-in-form") and not browser.find_elements(By.ID, "try-form")


def sign_in(browser: Any, server: RunningServer) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    browser.find_element(By.ID, "key").send_keys(TEST_KEY)
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()
    wait_for(browser, "document.getElementById('voice-engine')", "the status tab")


def playable(browser: Any, selector: str, what: str) -> Any:
    """Wait until the audio element at ``selector`` has played some of a clip with a length; {duration}."""
    return wait_for(
        browser,
        f"(() => {{ const a = document.querySelector({selector!r});"
        " return a && !a.error && isFinite(a.duration) && a.duration > 0 && a.played.length > 0"
        " && a.currentTime > 0 ? {duration: a.duration} : null; })()",
        what,
    )


def test_upload_drop_and_record_voices_give_a_character_an_emotion_and_hear_it(
    start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Path, browser: Any, shots: Path,
    piper_engines: tuple[TTSEngine, TTSEngine], spoken_text: Callable[[str], tuple[np.ndarray, int]],
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    listening = ListeningVoice(piper_engines[0])
    server = start_server(server_config(ollama.url, tmp_path), engines=(listening, piper_engines[1]))
    samples, rate = spoken_text("The moon is out tonight, and the sea is quiet and silver.")
    clip = tmp_path / "moon.flac"
    sf.write(clip, samples, rate, format="FLAC")
    sign_in(browser, server)
    pages: list[str] = []

    browser.find_element(By.LINK_TEXT, "Voices").click()
    wait_for(browser, "document.getElementById('voice-upload')", "the voices tab")
    browser.find_element(By.ID, "voice-file").send_keys(str(clip))  # the file input keyboard users have
    assert browser.find_element(By.ID, "voice-id").get_attribute("value") == "moon"
    browser.find_element(By.ID, "voice-upload-button").click()
    wait_for(browser, "document.getElementById('voice-moon')", "the uploaded voice in the list")
    browser.execute_script("document.querySelector('#voice-moon audio').play()")
    assert playable(browser, "#voice-moon audio", "the stored clip to play")["duration"] > 2.0

    # Drag and drop: a file dropped on the zone (built in the page from the clip just stored).
    browser.execute_async_script(
        "const done = arguments[0];"
        "fetch('/voices/moon/audio').then(r => r.blob()).then(blob => {"
        " const dt = new DataTransfer(); dt.items.add(new File([blob], 'Sea Shore.wav', {type: 'audio/wav'}));"
        " document.getElementById('drop-zone').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true,"
        " cancelable: true})); done(); });"
    )
    assert browser.find_element(By.ID, "voice-id").get_attribute("value") == "sea-shore"
    browser.find_element(By.ID, "voice-upload-button").click()
    wait_for(browser, "document.getElementById('voice-sea-shore')", "the dropped voice in the list")

    # Recording from the (fake) microphone, about three seconds.
    browser.find_element(By.ID, "record-button").click()
    wait_for(browser, "document.getElementById('record-button').getAttribute('aria-pressed') === 'true'", "recording")
    browser.execute_async_script("setTimeout(arguments[0], 3000)")
    browser.find_element(By.ID, "record-button").click()
    wait_for(browser, "document.getElementById('drop-chosen').textContent.includes('recording.wav')", "the recording")
    voice_id = browser.find_element(By.ID, "voice-id")
    assert voice_id.get_attribute("value") == "recording"
    voice_id.clear()
    voice_id.send_keys("beep")
    browser.find_element(By.ID, "voice-upload-button").click()
    wait_for(browser, "document.getElementById('voice-beep')", "the recorded voice")
    stored = {v.voice_id: v.seconds for v in server.services.library.list()}
    assert sorted(stored) == ["beep", "moon", "sea-shore"]
    assert 2.0 < stored["beep"] < 5.0
    pages.append(browser.page_source)
    browser.save_screenshot(str(shots / "voices.png"))
    browser.find_element(By.CSS_SELECTOR, "#voice-sea-shore button.danger").click()
    browser.switch_to.alert.accept()  # "Delete the voice sea-shore?"
    wait_for(browser, "!document.getElementById('voice-sea-shore') && document.getElementById('voice-moon')",
             "the voice gone from the list")
    assert sorted(v.voice_id for v in server.services.library.list()) == ["beep", "moon"]

    browser.find_element(By.LINK_TEXT, "Characters").click()
    wait_for(browser, "document.getElementById('character-operator')", "the characters tab")
    browser.find_element(By.CSS_SELECTOR, "#character-operator > summary").click()
    browser.find_element(By.CSS_SELECTOR, "#character-operator details.new-emotion > summary").click()
    browser.find_element(By.ID, "new-emotion-operator-name").send_keys("Dreamy")
    browser.find_element(By.ID, "new-emotion-operator-description").send_keys("Slow and far away.")
    Select(browser.find_element(By.ID, "new-emotion-operator-voices")).select_by_value("moon")
    exaggeration = browser.find_element(By.ID, "new-emotion-operator-exaggeration")
    exaggeration.clear()
    exaggeration.send_keys("1.1")
    browser.find_element(By.CSS_SELECTOR, "#new-emotion-operator button[type=submit]").click()
    wait_for(browser, "document.getElementById('emotion-operator-dreamy')", "the new emotion")
    browser.find_element(By.CSS_SELECTOR, "#character-operator > summary").click()
    browser.find_element(By.CSS_SELECTOR, "#emotion-operator-dreamy > summary").click()
    browser.find_element(By.CSS_SELECTOR, "#emotion-operator-dreamy button.hear-emotion").click()
    assert playable(browser, "#hear-operator-dreamy", "the emotion's test line to play")["duration"] > 1.0
    pages.append(browser.page_source)
    browser.save_screenshot(str(shots / "emotions.png"))
    moon = str(tmp_path / "data" / "voices" / "moon.wav")
    assert (listening.spoken[-1].clip, listening.spoken[-1].exaggeration) == (moon, 1.1)

    ollama.script("I am drifting among the stars. ", "Everything is soft and slow.")
    browser.find_element(By.LINK_TEXT, "Try it").click()
    wait_for(browser, "document.getElementById('try-form')", "the try-it tab")
    Select(browser.find_element(By.ID, "try-emotion")).select_by_value("operator-dreamy")
    browser.find_element(By.ID, "try-text").send_keys("How do you feel?")
    listening.spoken.clear()
    browser.find_element(By.ID, "try-speak").click()
    wait_for(browser, "document.getElementById('try-reply').textContent.includes('soft and slow')", "the reply")
    wait_for(browser, "document.getElementById('try-status').dataset.state === 'played'", "the reply played out")
    assert wait_for(browser, HEARD, "the reply heard") > 1.0
    assert {(s.clip, s.exaggeration) for s in listening.spoken} == {(moon, 1.1)}  # spoken as the emotion

    # Talking instead of typing: the microphone's recording goes through /process-audio, with the emotion
    # and this line's own voice settings.
    ollama.script("The last train has long gone. ", "Stay and look at the stars.")
    browser.find_element(By.CSS_SELECTOR, "#try-knobs > summary").click()
    browser.find_element(By.ID, "try-temperature").send_keys("0.4")
    browser.find_element(By.ID, "try-max_tokens").send_keys("300")
    listening.spoken.clear()
    browser.find_element(By.ID, "try-talk").click()
    wait_for(browser, "document.getElementById('try-talk').getAttribute('aria-pressed') === 'true'", "listening")
    browser.execute_async_script("setTimeout(arguments[0], 3500)")
    browser.find_element(By.ID, "try-talk").click()
    said = wait_for(browser, "(() => { const t = document.getElementById('try-reply').textContent;"
                             " return t.includes('look at the stars') ? t : null; })()", "the spoken turn's reply")
    assert "You said:" in said and "last train" in said.lower()
    wait_for(browser, "document.getElementById('try-status').dataset.state === 'played'", "the reply played out")
    assert {(s.clip, s.exaggeration, s.temperature, s.max_tokens) for s in listening.spoken} == {(moon, 1.1, 0.4, 300)}
    pages.append(browser.page_source)
    browser.save_screenshot(str(shots / "try-it-emotion.png"))
    for where in [*pages, repr(browser.get_cookies())]:
        assert TEST_KEY not in where  # not on the voices, emotions or try-it pages, nor in a cookie


def test_a_page_from_elsewhere_cannot_change_characters(
    start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Path, browser: Any
) -> None:
    """A signed-in browser's cookie alone (no CSRF token) changes nothing, even from the console's own origin."""
    from selenium.webdriver.common.by import By

    server = start_server(server_config(ollama.url, tmp_path))
    browser.get(server.url + "/")
    browser.find_element(By.ID, "key").send_keys(TEST_KEY)
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()
    wait_for(browser, "document.getElementById('voice-engine')", "the status tab")
    answer = browser.execute_async_script(
        "const done = arguments[0];"
        "fetch('/characters', {method: 'POST', credentials: 'same-origin',"
        " headers: {'Content-Type': 'application/json'}, body: JSON.stringify({id: 'mallory'})})"
        ".then(async r => done([r.status, await r.json()]));"
    )
    assert answer[0] == 403 and answer[1]["error"]["code"] == "csrf_failed"
    assert "mallory" not in server.services.characters
