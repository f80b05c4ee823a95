"""A sentence spoken through the T3 batch decoder: the library's generate() runs, its T3 call is batched.

Each caller runs the library's own ``generate()`` (text normalisation, tokenization, exaggeration,
the token clean-up after T3) on its own copy of the conditionals, under the model lock. Where
generate() calls T3, the engine's wrapper hands the call to ``BatchedT3``: the caller's sequence
joins the shared decoder (t3_batch.py), the model lock is let go while it decodes, and the tokens
come back as T3 would have returned them. S3Gen then vocodes each window on the caller's thread:
with ``vocoder_batch`` (on CUDA by default) its flow decoder joins other callers' windows in one batch
(vocoder_batch.py); otherwise one caller at a time, first windows first (vocoder_gate.py), since on a
CPU S3Gen is compute-bound and gains nothing from batching (docs/BATCHING.md has the figures).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import torch

from cloud_server.tts.chatterbox_call import SentenceCall
from cloud_server.tts.chatterbox_stream import TokensReady, TokenStream, stream_audio, t3_role, watermarked
from cloud_server.tts.conditionals import clone_conditionals
from cloud_server.tts.s3gen_hooks import WindowRoute, routed_window, window_generator
from cloud_server.tts.t3_batch import T3Job
from cloud_server.tts.t3_sequence import T3Sequence
from cloud_server.tts.thread_route import ThreadRoute

LOCK_POLL_SECONDS = 0.1

Route = Callable[[dict[str, Any]], Any]
_ROUTE: ThreadRoute[Route] = ThreadRoute()


def routed_here() -> bool:
    """Whether this thread's T3 calls go to the batch decoder."""
    return _ROUTE.get() is not None


def routed(route: Route) -> contextlib.AbstractContextManager[None]:
    """While inside, this thread's T3 calls go to ``route`` (with their arguments by name)."""
    return _ROUTE.using(route)


def t3_call(inner: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Hand the library's T3 call, its arguments bound by name, to this thread's route."""
    bound = inspect.signature(inner).bind(*args, **kwargs)
    bound.apply_defaults()
    route = _ROUTE.get()
    assert route is not None, "t3_call outside routed()"
    return route(dict(bound.arguments))


class _Captured(Exception):
    def __init__(self, inputs: dict[str, Any]) -> None:
        super().__init__("T3 inputs captured")
        self.inputs = inputs


def t3_inputs(engine: Any, text: str, voice: Any) -> dict[str, Any]:
    """What the library's generate() hands T3 for this text and voice (for benchmarks and tests)."""

    def capture(inputs: dict[str, Any]) -> Any:
        raise _Captured(inputs)

    with engine.loaded.lock:
        conds = clone_conditionals(engine._pristine(voice))
        try:
            with routed(capture):
                engine._generate(text, voice, conds)
        except _Captured as captured:
            return captured.inputs
    raise RuntimeError("generate() did not call T3")


def acquire(lock: threading.Lock, call: SentenceCall) -> None:
    """Take a lock, leaving (``Interrupted``) if the caller hangs up or the sentence times out."""
    while not lock.acquire(timeout=LOCK_POLL_SECONDS):
        call.check()


class BatchedT3:
    """The route for one sentence: its sequence in the batch, its tokens streamed to ``call.tokens``."""

    def __init__(
        self, loaded: Any, call: SentenceCall, conds: Any, seed: int | None = None,
        first_window: int = 0, first_audio: threading.Event | None = None,
    ) -> None:
        self.loaded, self.call, self.conds = loaded, call, conds
        self.seed = seed if seed is not None else int(torch.randint(0, 2**62, (1,)))
        self.first_window, self.first_audio = first_window, first_audio

    def __call__(self, inputs: dict[str, Any]) -> Any:
        """Decode in the batch with the model lock let go; back under the lock with our conditionals."""
        loaded, call = self.loaded, self.call
        t3, turbo = loaded.model.t3, loaded.kind == "turbo"
        # What the library would allow: inference_turbo samples one token before max_gen_len more.
        requested = inputs["max_gen_len"] + 1 if turbo else (inputs["max_new_tokens"] or t3.hp.max_speech_tokens)
        sequence = T3Sequence(t3, turbo, inputs, min(call.budget, requested), self.seed)
        tokens = call.tokens
        job = T3Job(sequence, on_token=tokens.push if tokens is not None else _ignore, check=call.check,
                    first_window=self.first_window, first_audio=self.first_audio)
        loaded.batch_decoder().submit(job)
        loaded.lock.release()
        try:
            return job.wait(poll=_nothing)  # a hang-up is seen by the decoder, which ends the job
        finally:
            loaded.lock.acquire()  # the caller's finally lets it go; others hold it only briefly
            loaded.model.conds = self.conds  # generate() reads them again after T3


def speak_batched(engine: Any, text: str, voice: Any, call: SentenceCall) -> Generator[Any, None, None]:
    """Float audio pieces (watermarked) of one sentence whose T3 decodes in the shared batch."""
    loaded = engine.loaded
    acquire(loaded.lock, call)
    try:
        conds = clone_conditionals(engine._pristine(voice))
    finally:
        loaded.lock.release()
    # The decoder may pause others' later tokens until this caller's first audio is made (first_audio_first).
    first_audio = threading.Event()
    first_window = engine.cfg.stream_first_chunk_tokens if engine.cfg.stream else call.budget
    route = BatchedT3(loaded, call, conds, first_window=first_window, first_audio=first_audio)
    try:
        yield from _speak(engine, text, voice, call, route, first_audio)
    finally:
        first_audio.set()


def _speak(
    engine: Any, text: str, voice: Any, call: SentenceCall, route: BatchedT3, first_audio: threading.Event
) -> Generator[Any, None, None]:
    loaded = engine.loaded
    model = loaded.model
    conds = route.conds

    def run_t3() -> None:  # ends with TokensReady where generate() reaches S3Gen
        with routed(route):
            acquire(loaded.lock, call)
            try:
                engine._generate(text, voice, conds)
            finally:
                loaded.lock.release()

    windows = itertools.count()

    def vocode(window: list[int]) -> Any:
        try:
            return vocode_window(engine, conds, window, call, first=next(windows) == 0)
        finally:
            first_audio.set()  # the decoder's pause for this caller's first audio ends (first_audio_first)

    if engine.cfg.stream:
        call.tokens = TokenStream()
        wait = max(call.deadline - time.monotonic(), 0.0) + 1.0
        pieces = stream_audio(run_t3, vocode, call.tokens, engine._plan, call.stop, call.check, wait,
                              f"{threading.current_thread().name}:t3")
        with contextlib.closing(pieces):
            for piece in pieces:
                yield watermarked(model.watermarker, piece, engine.sample_rate)
        return
    try:
        with t3_role():
            run_t3()
        raise RuntimeError("generate() returned without reaching S3Gen")
    except TokensReady as ready:
        tokens = ready.tokens
    yield watermarked(model.watermarker, vocode(tokens), engine.sample_rate)


def vocode_window(
    engine: Any, conds: Any, window: list[int], call: SentenceCall, first: bool, seed: int | None = None
) -> Any:
    """One caller's window through S3Gen: in the S3Gen batch, or alone at the gate (first windows first).

    ``seed`` gives the batched window its own random stream: its audio is then the library's alone after
    ``torch.manual_seed(seed)`` (for tests and benchmarks; None draws as the library does).
    """
    loaded = engine.loaded
    if engine.vocoder_batched:
        route = WindowRoute(loaded.vocoder_batch(), first, call.check, window_generator(seed, engine.device))
        with routed_window(route):  # the estimator's step check sees this caller's hang-up inside the batch
            return engine.vocode(conds, window)
    loaded.vocoder_lock.acquire(first=first, check=call.check)
    try:
        loaded.call = call  # S3Gen's step check stops this caller's window on hang-up or deadline
        return engine.vocode(conds, window)
    finally:
        loaded.call = None
        loaded.vocoder_lock.release()


def _nothing() -> None:
    return None


def _ignore(_token: int) -> None:
    return None
