"""Fixtures for the llm tests: a running Ollama stand-in and a config pointing at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.config import LLMConfig
from tests.ollama_standin import OllamaStandIn


@pytest.fixture
def ollama() -> Iterator[OllamaStandIn]:
    """A real HTTP server on 127.0.0.1 (free port) speaking Ollama's protocol; see tests/ollama_standin.py."""
    with OllamaStandIn() as standin:
        yield standin


@pytest.fixture
def standin_llm_config(ollama: OllamaStandIn) -> LLMConfig:
    """An Ollama LLM config aimed at the stand-in, with short timeouts so failures show quickly."""
    return LLMConfig(ollama_host=ollama.url, timeout_seconds=2.0, warm_up_timeout_seconds=5.0)
