"""Continuous batching of T3 (text → speech tokens) across callers, on one decoding thread.

T3's token loop is memory-bound: one step for eight sequences reads the same weights as one step for
one. Here every caller's sentence is a ``T3Sequence`` (t3_sequence.py); this thread prefills each
newcomer alone (its own KV cache, no padding), merges that cache into the running batch (left-padded,
with an attention mask and per-row positions, so each row sees exactly its own past), and runs one
transformer step for all rows. A sequence leaves at its stop token, its budget, its caller's hang-up
or deadline (``check``), or its own failure; the others go on. A newcomer joins at the next step;
into an idle decoder it waits at most ``gather_seconds`` for companions.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from cloud_server.tts.t3_sequence import T3Sequence

_LOGGER = logging.getLogger(__name__)
_ROLE = threading.local()
IDLE_POLL_SECONDS = 0.5


def in_batch_decoder() -> bool:
    """Whether the calling thread is the batch decoder (the engine's per-caller hooks stay out of it)."""
    return bool(getattr(_ROLE, "decoder", False))


@dataclass
class T3Job:
    """One sentence handed to the decoder, and where its tokens and its end go."""

    sequence: T3Sequence
    on_token: Callable[[int], None]
    """Called on the decoder thread with each sampled token (must be quick and must not raise)."""
    check: Callable[[], None]
    """Raises to take the sequence out (hang-up, deadline); what it raises is the caller's result."""
    done: threading.Event = field(default_factory=threading.Event)
    result: torch.Tensor | None = None
    error: BaseException | None = None

    def finish(self, result: torch.Tensor | None, error: BaseException | None = None) -> None:
        """Deliver the end of the sentence (only the first call counts)."""
        if not self.done.is_set():
            self.result, self.error = result, error
            self.done.set()

    def wait(self, poll: Callable[[], None], poll_seconds: float = 0.1) -> torch.Tensor:
        """Block until the sentence ends; ``poll`` runs between waits (it may raise to give up)."""
        while not self.done.wait(poll_seconds):
            poll()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@dataclass
class BatchStats:
    """Counters for /health-style reporting and the benchmark."""

    steps: int = 0
    rows_stepped: int = 0
    tokens: int = 0
    step_seconds: float = 0.0
    prefill_seconds: float = 0.0
    largest_batch: int = 0


class T3Batcher:
    """The one decoding thread of a loaded model; ``submit`` from any thread."""

    def __init__(self, t3: Any, *, gather_seconds: float, max_sequences: int, autocast: Callable[[], Any]) -> None:
        self.t3 = t3
        self.gather_seconds = gather_seconds
        self.max_sequences = max_sequences
        self.stats = BatchStats()
        self._autocast = autocast
        self._incoming: queue.Queue[T3Job] = queue.Queue()
        self._active: list[T3Job] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="t3-batch", daemon=True)
        self._thread.start()

    def submit(self, job: T3Job) -> T3Job:
        """Queue a sentence; it joins the batch at the decoder's next step."""
        if self._closed.is_set():
            job.finish(None, RuntimeError("the T3 batch decoder is closed"))
        else:
            self._incoming.put(job)
        return job

    def close(self) -> None:
        """Stop the thread; sentences in flight end with an error."""
        self._closed.set()
        self._thread.join(timeout=30.0)

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        _ROLE.decoder = True
        with torch.inference_mode():
            while not self._closed.is_set():
                try:
                    joiners = self._gather()
                    with self._autocast():
                        for job in joiners:
                            self._join(job)
                        if self._active:
                            self._step()
                except Exception as err:  # a failure of the shared step: every sentence in it fails
                    _LOGGER.exception("T3 batch step failed for %d sequences", len(self._active))
                    self._fail_all(err)
        self._fail_all(RuntimeError("the T3 batch decoder is closed"))
        while not self._incoming.empty():
            self._incoming.get_nowait().finish(None, RuntimeError("the T3 batch decoder is closed"))

    def _gather(self) -> list[T3Job]:
        """Newcomers: whatever waits now; into an idle decoder, the first plus who comes within the window."""
        room = self.max_sequences - len(self._active)
        joiners: list[T3Job] = []
        if not self._active:
            try:
                joiners.append(self._incoming.get(timeout=IDLE_POLL_SECONDS))
            except queue.Empty:
                return []
            until = time.monotonic() + self.gather_seconds
            while len(joiners) < room and (left := until - time.monotonic()) > 0:
                try:
                    joiners.append(self._incoming.get(timeout=left))
                except queue.Empty:
                    break
        while len(joiners) < room:
            try:
                joiners.append(self._incoming.get_nowait())
            except queue.Empty:
                break
        return joiners

    def _join(self, job: T3Job) -> None:
        """Prefill the newcomer alone and add its rows; a failure here is that sentence's alone."""
        started = time.monotonic()
        try:
            job.check()
            seq = job.sequence
            pre = seq.prefill()
            token = seq.sample(pre.logits)
        except Exception as err:
            job.finish(None, err)
            return
        finally:
            self.stats.prefill_seconds += time.monotonic() - started
        self._merge(pre.cache, seq.rows)
        self._active.append(job)
        self._emit(job, token)
        self._retire()

    def _step(self) -> None:
        """One transformer step for every row, then each sequence samples from its own rows."""
        started = time.monotonic()
        jobs = list(self._active)
        embeds = torch.cat([job.sequence.next_embeds() for job in jobs])
        positions = torch.tensor(
            [[job.sequence.position()] for job in jobs for _ in range(job.sequence.rows)], device=embeds.device
        )
        assert self._mask is not None
        mask = torch.cat([self._mask, self._mask.new_ones(self._mask.size(0), 1)], dim=1)
        out = self.t3.tfmr(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
            past_key_values=self._cache, use_cache=True,
        )
        self._cache, self._mask = out.past_key_values, mask
        logits = self.t3.speech_head(out.last_hidden_state[:, -1, :])
        row = 0
        for job in jobs:
            rows = job.sequence.rows
            try:
                job.check()
                token = job.sequence.sample(logits[row : row + rows])
            except Exception as err:
                job.sequence.finished = True
                job.finish(None, err)
            else:
                self._emit(job, token)
            row += rows
        self.stats.steps += 1
        self.stats.rows_stepped += embeds.size(0)
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        self.stats.step_seconds += time.monotonic() - started
        self._retire()

    def _emit(self, job: T3Job, token: int) -> None:
        if token >= 0:
            self.stats.tokens += 1
            try:
                job.on_token(token)
            except Exception:
                _LOGGER.exception("A token listener failed")
        if job.sequence.finished and not job.done.is_set():
            job.finish(job.sequence.output())

    # ------------------------------------------------------------------ the shared KV cache

    def _merge(self, cache: Any, rows: int) -> None:
        """Add a newcomer's cache under the batch's, left-padding the shorter one."""
        new_len = cache.get_seq_length()
        new_mask = torch.ones(rows, new_len, dtype=torch.long, device=self.t3.device)
        if self._cache is None:
            self._cache, self._mask = cache, new_mask
            return
        assert self._mask is not None
        old_len = self._mask.size(1)
        length = max(old_len, new_len)
        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, length), _left_pad(theirs.keys, length)])
            mine.values = torch.cat([_left_pad(mine.values, length), _left_pad(theirs.values, length)])
        self._mask = torch.cat([_left_pad_mask(self._mask, length), _left_pad_mask(new_mask, length)])

    def _retire(self) -> None:
        """Drop the rows of sequences that ended, and the padding no row needs any more."""
        keep_jobs = [job for job in self._active if not job.done.is_set()]
        if len(keep_jobs) == len(self._active):
            return
        if not keep_jobs:
            self._active, self._cache, self._mask = [], None, None
            return
        rows: list[int] = []
        row = 0
        for job in self._active:
            if not job.done.is_set():
                rows.extend(range(row, row + job.sequence.rows))
            row += job.sequence.rows
        assert self._mask is not None
        index = torch.tensor(rows, device=self._mask.device)
        self._cache.batch_select_indices(index)
        mask = self._mask[index]
        first = int(mask.any(dim=0).nonzero()[0])
        if first:
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]
            mask = mask[:, first:]
        self._active, self._mask = keep_jobs, mask

    def _fail_all(self, err: BaseException) -> None:
        for job in self._active:
            job.finish(None, err)
        self._active, self._cache, self._mask = [], None, None


def _left_pad(states: torch.Tensor, length: int) -> torch.Tensor:
    """(rows, heads, time, dim) padded with zeros at the start of ``time`` to ``length``."""
    return F.pad(states, (0, 0, length - states.size(-2), 0))


def _left_pad_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    return F.pad(mask, (length - mask.size(1), 0))
