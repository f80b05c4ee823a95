"""Continuous batching of T3 (text → speech tokens) across callers, on one decoding thread.

T3's token loop is memory-bound: one step for eight sequences reads the same weights as one step for
one. Here every caller's sentence is a ``T3Sequence`` (t3_sequence.py); this thread prefills the
newcomers of one gather together (t3_prefill.py: left-padded, whole or ``prefill_chunk`` positions
between two steps of the running batch), merges their cache into the running batch's (left-padded,
with an attention mask and per-row positions, so each row sees exactly its own past), and runs one
transformer step for all rows. A sequence leaves at its stop token, its budget, its caller's hang-up
or deadline (``check``), or its own failure; the others go on. A newcomer joins at the next step;
into an idle decoder it waits at most ``gather_seconds`` for companions.

First audio first: where T3 and S3Gen share the CPU, once every running sentence has its first
window's tokens the decoder pauses while another caller's first window still waits for S3Gen
(``first_audio_first``): later tokens would only slow that window down. A caller alone goes on.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from cloud_server.tts.t3_cache import keep_rows, merge
from cloud_server.tts.t3_job import BatchStats, T3Job
from cloud_server.tts.t3_prefill import PrefillGroup

_LOGGER = logging.getLogger(__name__)
_ROLE = threading.local()
IDLE_POLL_SECONDS = 0.5
HOLD_POLL_SECONDS = 0.02
MAX_HOLD_SECONDS = 60.0
"""A pause for others' first audio lasts at most this long at a time (a safety net: the callers end it)."""


def in_batch_decoder() -> bool:
    """Whether the calling thread is the batch decoder (the engine's per-caller hooks stay out of it)."""
    return bool(getattr(_ROLE, "decoder", False))


class T3Batcher:
    """The one decoding thread of a loaded model; ``submit`` from any thread."""

    def __init__(
        self, t3: Any, *, gather_seconds: float, max_sequences: int, autocast: Callable[[], Any],
        prefill_chunk: int = 0, first_audio_first: bool = False,
    ) -> None:
        self.t3 = t3
        self.gather_seconds = gather_seconds
        self.max_sequences = max_sequences
        self.prefill_chunk = prefill_chunk
        self.first_audio_first = first_audio_first
        self.stats = BatchStats()
        self._autocast = autocast
        self._incoming: queue.Queue[T3Job] = queue.Queue()
        self._active: list[T3Job] = []
        self._waiting: list[T3Job] = []
        self._group: PrefillGroup | None = None
        self._awaiting: list[T3Job] = []
        """Jobs whose caller still waits for its first audio (active or not)."""
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._closed = threading.Event()
        self._held_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="t3-batch", daemon=True)
        self._thread.start()

    def submit(self, job: T3Job) -> T3Job:
        """Queue a sentence; it joins the batch at the decoder's next step."""
        if self._closed.is_set():
            job.finish(None, RuntimeError("the T3 batch decoder is closed"))
        else:
            self._incoming.put(job)
        return job

    def holding(self) -> bool:
        """Whether decoding is paused now for a caller's first audio."""
        return self._held_since is not None

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
                    self._waiting += self._gather()
                    with self._autocast():
                        if self._group is None and self._waiting:
                            self._group = self._start_group()
                        if self._group is not None:
                            self._prefill()
                        if self._active and not self._hold():
                            self._step()
                except Exception as err:  # a failure of the shared step: every sentence in it fails
                    _LOGGER.exception("T3 batch step failed for %d sequences", len(self._active))
                    self._fail_all(err)
        self._fail_all(RuntimeError("the T3 batch decoder is closed"), newcomers=True)
        while not self._incoming.empty():
            self._incoming.get_nowait().finish(None, RuntimeError("the T3 batch decoder is closed"))

    def _gather(self) -> list[T3Job]:
        """Newcomers: whatever waits now; into an idle decoder, the first plus who comes within the window."""
        group = self._group.jobs if self._group is not None else []
        room = self.max_sequences - len(self._active) - len(group) - len(self._waiting)
        joiners: list[T3Job] = []
        if not (self._active or group or self._waiting):
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

    def _start_group(self) -> PrefillGroup | None:
        """The waiting newcomers as one prefill group; a failure to build a prompt is that sentence's alone."""
        jobs, prompts = [], []
        for job in self._waiting:
            try:
                job.check()
                prompts.append(job.sequence.prompt_embeds())
            except Exception as err:
                job.finish(None, err)
            else:
                jobs.append(job)
                if job.first_audio is not None:
                    self._awaiting.append(job)
        self._waiting = []
        shared = min((job.sequence.cond_length for job in jobs), default=0)
        return PrefillGroup.of(jobs, prompts, shared=shared) if jobs else None

    def _prefill(self) -> None:
        """One chunk (or the rest) of the group's prompts; when done, its sentences join the batch."""
        group = self._group
        assert group is not None
        started = time.monotonic()
        try:
            group.advance(self.t3.tfmr, self.prefill_chunk)
            self.stats.prefill_chunks += 1
            if not group.finished:
                return
            self._group = None
            self.stats.prefill_groups += 1
            self.stats.largest_prefill = max(self.stats.largest_prefill, len(group.jobs))
            assert group.last_hidden is not None
            logits = self.t3.speech_head(group.last_hidden)
        except Exception as err:  # the group's own forward: its sentences fail, the running batch goes on
            _LOGGER.exception("T3 prefill failed for %d sequences", len(group.jobs))
            self._group = None
            for job in group.jobs:
                job.finish(None, err)
            return
        finally:
            self.stats.prefill_seconds += time.monotonic() - started
        self._cache, self._mask = merge(self._cache, self._mask, group.cache, group.mask)
        for job, rows in group.rows_of():
            self._active.append(job)
            try:
                job.check()
                token = job.sequence.sample(logits[rows])
            except Exception as err:
                job.sequence.finished = True
                job.finish(None, err)
            else:
                self._emit(job, token)
        self._retire()

    def _hold(self) -> bool:
        """Whether to pause decoding now for others' first audio (and if so, wait a moment)."""
        self._awaiting = [job for job in self._awaiting if _awaits_first_audio(job)]
        now = time.monotonic()
        others = any(job is not waiting for job in self._active for waiting in self._awaiting)
        if (
            not (self.first_audio_first and others) or self._group is not None or self._waiting
            or not all(job.has_first_window() for job in self._active)
            or (self._held_since is not None and now - self._held_since > MAX_HOLD_SECONDS)
        ):
            self._end_hold(now)
            return False
        if self._held_since is None:
            self._held_since = now
        for job in self._active:  # a caller who hangs up while held still leaves now
            try:
                job.check()
            except Exception as err:
                job.sequence.finished = True
                job.finish(None, err)
        self._retire()
        with contextlib.suppress(queue.Empty):
            self._waiting.append(self._incoming.get(timeout=HOLD_POLL_SECONDS))
        return True

    def _end_hold(self, now: float) -> None:
        if self._held_since is not None:
            self.stats.hold_seconds += now - self._held_since
            self._held_since = None

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
        self._cache, mask = keep_rows(self._cache, self._mask, rows)
        self._active, self._mask = keep_jobs, mask

    def _fail_all(self, err: BaseException, newcomers: bool = False) -> None:
        """End the running batch's sentences (and, on close, the newcomers' not yet in it)."""
        for job in self._active:
            job.finish(None, err)
        self._active, self._cache, self._mask = [], None, None
        if newcomers:
            for job in [*(self._group.jobs if self._group is not None else []), *self._waiting]:
                job.finish(None, err)
            self._group, self._waiting = None, []



def _awaits_first_audio(job: T3Job) -> bool:
    """Whether the job's caller still waits for its first audio (a failed sentence makes none)."""
    if job.first_audio is None or job.first_audio.is_set():
        return False
    return not (job.done.is_set() and job.error is not None)
