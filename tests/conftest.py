"""Shared fixtures live in one plugin module per area, so each area's set-up stays small."""

pytest_plugins = [
    "tests.fixtures_server",
    "tests.fixtures_llm",
    "tests.fixtures_tts",
    "tests.fixtures_pi",
    "tests.fixtures_deploy",
    "tests.fixtures_features",
    "tests.fixtures_browser",
]
