"""The LLM seam: ``stream_reply(messages) -> iterator of text``; every backend implements it."""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

_BYTES_PER_TOKEN = 3
"""Estimate without a tokenizer: English runs ~4 bytes a token, digits and other scripts fewer."""


class LLMError(RuntimeError):
    """The LLM could not answer (unreachable, timed out, unknown model, failed); the message says why."""


class LLM(ABC):
    """One chat model. ``stream_reply`` may be called from several threads."""

    name: str = "llm"
    model: str = ""
    context_tokens: int = 2048
    """The model's context window, in tokens: prompt and reply together must fit in it."""
    reply_tokens: int = 200
    """Tokens kept free for the reply."""

    @abstractmethod
    def stream_reply(self, messages: list[dict[str, str]], cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply's text pieces as they are generated; stop early once ``cancel`` is set.

        Raises LLMError (also from inside the iteration). Closing the iterator stops generation.
        """

    @abstractmethod
    def warm_up(self) -> None:
        """Load the model now so the first caller does not wait; raise LLMError if it cannot."""

    def warm_up_prompts(self, system_prompts: Sequence[str]) -> int:
        """Load the model and, where the backend caches prompts, each system prompt; how many were sent.

        Default: only load the model (a backend without a prompt cache gains nothing more).
        """
        self.warm_up()
        return 0

    @abstractmethod
    def is_reachable(self) -> bool:
        """Cheap, bounded check for /health: can a reply be produced right now?"""

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in the prompt; without the model's tokenizer, an overestimate."""
        return math.ceil(len(text.encode("utf-8")) / _BYTES_PER_TOKEN)

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections or the model (default: nothing)."""
