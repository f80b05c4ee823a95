"""Which LLM backend answers: the one the config names."""

from __future__ import annotations

from cloud_server.llm.base import LLM
from common.config import LLMConfig


def make_llm(cfg: LLMConfig) -> LLM:
    """The backend the config names: Ollama (default) or the embedded llama.cpp model."""
    if cfg.backend == "embedded":
        from cloud_server.llm.embedded import EmbeddedLLM

        return EmbeddedLLM(cfg)
    from cloud_server.llm.ollama import OllamaLLM

    return OllamaLLM(cfg)
