"""Shared fixtures live in one plugin module per area, so each area's set-up stays small."""

import os

from common.speech import STEADY_VOICE_ENV

# Piper without its sampling noise in this process and every server and phone the tests start: what
# Whisper hears of the phone's own speech is then the same every run (it once heard "place" for "please").
os.environ[STEADY_VOICE_ENV] = "1"

pytest_plugins = [
    "tests.fixtures_server",
    "tests.fixtures_llm",
    "tests.fixtures_tts",
    "tests.fixtures_pi",
    "tests.fixtures_deploy",
    "tests.fixtures_features",
    "tests.fixtures_browser",
]
