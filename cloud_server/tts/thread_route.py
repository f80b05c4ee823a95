"""Where this thread's calls into the library go: a value set for a with-block, read by a hook.

The engine hooks chatterbox-tts's own calls (T3's inference, S3Gen's flow decoder) without changing
the library; a hook learns from this which caller's thread it runs on and where to send the call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

_T = TypeVar("_T")


class ThreadRoute(Generic[_T]):
    """One value per thread, set only inside :meth:`using` (None elsewhere)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self) -> _T | None:
        """This thread's value, or None outside :meth:`using`."""
        value: _T | None = getattr(self._local, "value", None)
        return value

    @contextlib.contextmanager
    def using(self, value: _T) -> Iterator[None]:
        """While inside, :meth:`get` on this thread gives ``value``."""
        self._local.value = value
        try:
            yield
        finally:
            self._local.value = None
