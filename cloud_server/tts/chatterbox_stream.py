"""Chatterbox streaming inside a sentence, without changing the library.

The library's ``generate()`` runs T3 (text → speech tokens) to the end, then S3Gen (tokens →
audio). Here ``generate()`` runs on a worker thread; a forward pre-hook on T3's speech embedding
(installed by the engine) sees every token as it is fed back and pushes it into a ``TokenStream``,
and when ``generate()`` reaches S3Gen the engine's wrapper hands over the final, cleaned tokens and
stops it there. Meanwhile the caller's thread vocodes windows of the tokens so far with the
library's own ``s3gen.inference`` and yields each stitched piece at once (see stream_stitch.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

import numpy as np

from cloud_server.tts.stream_stitch import Stitcher, StreamPlan, next_window_end, window_start

_LOGGER = logging.getLogger(__name__)

SPEECH_VOCAB = 6561
"""S3 speech tokens are 0..6560; above are T3's start/stop tokens, which S3Gen must never see."""
MIN_WATERMARK_SAMPLES = 2400
"""resemble-perth fails on pieces under ~800 samples (its STFT padding); 0.1 s is safely above."""
_ROLE = threading.local()
WORKER_JOIN_SECONDS = 30.0
"""How long to wait for T3 to notice a stop (one token step; minutes only if the process is starved)."""


class TokensReady(Exception):
    """Raised in the T3 thread where generate() would start S3Gen: T3 is done, here are its tokens."""

    def __init__(self, tokens: list[int]) -> None:
        super().__init__("speech tokens ready")
        self.tokens = tokens


class TokenStream:
    """The speech tokens of the sentence in flight: pushed by the T3 thread, awaited by the vocoder."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._live: list[int] = []
        self._final: list[int] | None = None
        self._error: BaseException | None = None

    def push(self, token: int) -> None:
        """One token T3 just produced (start/stop tokens are ignored)."""
        if 0 <= token < SPEECH_VOCAB:
            with self._changed:
                self._live.append(token)
                self._changed.notify_all()

    def finish(self, tokens: list[int] | None, error: BaseException | None = None) -> None:
        """T3 is done: its final tokens, or the error that stopped it."""
        with self._changed:
            self._final, self._error = tokens, error
            self._changed.notify_all()

    def wait(self, ready: Callable[[int, bool], bool], timeout: float) -> tuple[list[int], bool]:
        """Wait until ``ready(available, finished)``; return (tokens, finished). Raises T3's error."""
        with self._changed:
            self._changed.wait_for(lambda: ready(len(self._tokens()), self._done()), timeout=timeout)
            if self._error is not None:
                raise self._error
            return list(self._tokens()), self._done()

    def _done(self) -> bool:
        return self._final is not None or self._error is not None

    def _tokens(self) -> list[int]:
        return self._final if self._final is not None else self._live


def speech_tokens(tokens: Any) -> list[int]:
    """A token tensor as the plain list S3Gen may see."""
    return [int(t) for t in tokens.reshape(-1).tolist() if 0 <= int(t) < SPEECH_VOCAB]


def stream_audio(
    run_t3: Callable[[], Any],
    vocode: Callable[[list[int]], np.ndarray],
    tokens: TokenStream,
    plan: StreamPlan,
    stop: threading.Event,
    check: Callable[[], None],
    wait_seconds: float,
    worker_name: str,
) -> Generator[np.ndarray, None, None]:
    """Run T3 on a worker and yield float audio pieces as windows of its tokens are vocoded.

    ``run_t3`` must end by raising TokensReady (the engine's S3Gen wrapper does); ``stop`` makes the
    engine's hooks interrupt T3 when this generator is closed early; ``check`` raises on hang-up or
    timeout between windows.
    """
    worker = threading.Thread(target=_t3_worker, args=(run_t3, tokens), name=worker_name, daemon=True)
    worker.start()
    stitcher = Stitcher(plan)
    covered = 0
    try:
        while True:
            check()
            def ready(available: int, done: bool, covered: int = covered) -> bool:
                return done or next_window_end(covered, available, False, plan) is not None

            current, finished = tokens.wait(ready, timeout=wait_seconds)
            end = next_window_end(covered, len(current), finished, plan)
            if end is None:
                if finished:
                    tail = stitcher.finish()
                    if tail.size:
                        yield tail
                    return
                continue
            start = window_start(covered, plan)
            final = finished and end == len(current)
            piece = stitcher.add(vocode(current[start:end]), start, final)
            covered = end
            if piece.size:
                yield piece
            if final:
                return
    finally:
        stop.set()
        worker.join(timeout=WORKER_JOIN_SECONDS)
        if worker.is_alive():
            _LOGGER.error("Chatterbox T3 did not stop within %.0f s", WORKER_JOIN_SECONDS)


def _t3_worker(run_t3: Callable[[], Any], tokens: TokenStream) -> None:
    _ROLE.t3 = True
    try:
        run_t3()
    except TokensReady as ready:
        tokens.finish(ready.tokens)
        return
    except BaseException as err:  # handed to the vocoding thread, which raises it there
        tokens.finish(None, err)
        return
    tokens.finish(None, RuntimeError("generate() returned without reaching S3Gen"))


@contextlib.contextmanager
def t3_role() -> Iterator[None]:
    """Act as a T3 worker on this thread for a while: generate() hands its tokens over at S3Gen."""
    _ROLE.t3 = True
    try:
        yield
    finally:
        _ROLE.t3 = False


def in_t3_worker() -> bool:
    """Whether the calling thread is a streamed sentence's T3 worker (the hooks act only there)."""
    return bool(getattr(_ROLE, "t3", False))


def watermarked(watermarker: Any, piece: Any, sample_rate: int) -> Any:
    """The piece watermarked; one shorter than the watermarker's window is padded for it, then cut back."""
    short = len(piece) < MIN_WATERMARK_SAMPLES
    padded = np.pad(piece, (0, MIN_WATERMARK_SAMPLES - len(piece))) if short else piece
    return watermarker.apply_watermark(padded, sample_rate=sample_rate)[: len(piece)]
