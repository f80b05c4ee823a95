"""Speculative transcription: Whisper starts at the first candidate end, so the transcript is ready at the real end.

The listener calls :meth:`SpeculativeTranscriber.start` when a short silence follows speech (the
moment Smart Turn is asked, or the same silence under the silence rule) and :meth:`drop` when the
caller goes on. The call logic then asks :meth:`transcribe` for the whole utterance as before: when
the utterance is the speculated audio plus silence, the speculative text is used (already done, or
nearly); otherwise Whisper runs on the utterance.

CPU budget (a Pi 4 has four cores): Whisper runs in one worker thread of its own, one job at a
time; a newer candidate end replaces a job still waiting (latest wins), so jobs never pile up.
Silero VAD (listener thread) and Smart Turn (its own worker, one ONNX thread) run beside it, never
behind it. A job already running cannot be stopped inside CTranslate2; its result is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_LOGGER = logging.getLogger(__name__)

RESULT_WAIT_SECONDS = 60.0
"""Longest wait for a speculative job to finish before transcribing anew (a stuck worker), in seconds."""
_IDLE_POLL_SECONDS = 1.0


@dataclass
class _Guess:
    pcm: bytes
    text: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


class SpeculativeTranscriber:
    """Wraps a blocking ``transcribe(pcm) -> str`` with one worker that transcribes ahead of the end of turn."""

    def __init__(self, transcribe: Callable[[bytes], str]) -> None:
        self._transcribe = transcribe
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: _Guess | None = None
        self._current: _Guess | None = None
        self._running: _Guess | None = None
        self._claimed: tuple[_Guess, int] | None = None
        """The guess that describes the utterance just ended, and that utterance's length (see :meth:`claim`)."""
        self._awaited: _Guess | None = None
        """A guess :meth:`transcribe` waits for that the worker has not started: it goes first."""
        self._closed = False
        self.runs = 0
        """Whisper runs so far, speculative and not (for logs and tests)."""
        self.used = 0
        """Utterances answered with a speculative transcript."""
        self._worker = threading.Thread(target=self._run, name="stt-speculative", daemon=True)
        self._worker.start()

    def start(self, pcm: bytes) -> None:
        """A candidate end: transcribe ``pcm`` (the utterance so far) ahead; never blocks."""
        with self._lock:
            self._current = self._pending = _Guess(pcm)
            self._wake.notify()

    def drop(self) -> None:
        """The caller went on: the speculation no longer describes the utterance (a claimed one stays)."""
        with self._lock:
            claimed = self._claimed[0] if self._claimed is not None else None
            self._current = None
            if self._pending is not claimed:
                self._pending = None

    def claim(self, pcm: bytes) -> None:
        """The utterance ended as ``pcm``: the speculation that describes it is kept for exactly that audio.

        The phone starts listening again the moment a turn ends (the caller may go on, or barge in), and
        that listener drops speculations as it goes: without the claim it could drop this one before
        :meth:`transcribe` takes it, and Whisper would run again from the start.
        """
        with self._lock:
            guess = self._current
            self._claimed = (guess, len(pcm)) if guess is not None and pcm.startswith(guess.pcm) else None

    def transcribe(self, pcm: bytes) -> str:
        """Text of the utterance: the speculative one when ``pcm`` is its audio plus silence; blocking."""
        with self._lock:
            guess, self._current = self._current, None
            claimed, self._claimed = self._claimed, None
            if claimed is not None and claimed[1] == len(pcm) and pcm.startswith(claimed[0].pcm):
                guess = claimed[0]
            if guess is not None and not pcm.startswith(guess.pcm):
                if guess is self._pending:
                    self._pending = None
                guess = None
            lost = guess is not self._pending and guess is not self._running
            if guess is not None and lost and not guess.done.is_set():
                guess = None  # replaced by a newer speculation before it ran: it never will
            if guess is not None and guess is self._pending:
                # Awaited before the worker took it: out of reach of drop() and start(), which a listener
                # starting meanwhile calls (barge-in listens on while the phone transcribes).
                self._pending, self._awaited = None, guess
        if guess is not None and guess.done.wait(RESULT_WAIT_SECONDS) and guess.text is not None:
            self.used += 1
            return guess.text
        return self._run_whisper(pcm)

    def close(self) -> None:
        """Stop the worker (after the job in hand)."""
        with self._lock:
            self._closed = True
            self._pending = self._current = self._awaited = None
            self._wake.notify()

    def join(self, timeout: float) -> None:
        """Stop the worker and wait (bounded) for the run in hand: a process must not exit while a native
        Whisper run is under way in a daemon thread (it aborts: "terminate called without an active exception")."""
        self.close()
        self._worker.join(timeout)

    def _run_whisper(self, pcm: bytes) -> str:
        self.runs += 1
        return self._transcribe(pcm)

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and self._awaited is None and not self._closed:
                    self._wake.wait(_IDLE_POLL_SECONDS)
                if self._closed:
                    return
                guess: _Guess | None
                if self._awaited is not None:
                    guess, self._awaited = self._awaited, None
                else:
                    guess, self._pending = self._pending, None
                self._running = guess
            assert guess is not None
            started = time.monotonic()
            try:
                guess.text = self._run_whisper(guess.pcm)
            except Exception:  # the final transcribe() runs Whisper again and reports its own error
                _LOGGER.exception("speculative transcription failed")
            finally:
                guess.done.set()
                with self._lock:
                    self._running = None
            _LOGGER.debug("speculative: %.2f s of audio in %.2f s", len(guess.pcm) / 32000, time.monotonic() - started)
