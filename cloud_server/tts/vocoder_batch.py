"""S3Gen's flow decoder for several callers' windows at once, on one thread (for GPUs).

Each caller's thread runs the library's own S3Gen call (its flow encoder and HiFiGAN); only the flow
decoder's call, the 10 estimator passes where S3Gen's time goes, is handed here (s3gen_hooks.py).
Windows waiting together are padded to the longest (the estimator is causal and masks the padded
frames, so each row's valid frames are what they would be alone) and solved in ONE call of the
library's decoder, each with its own noise, speaker embedding, prompt and mask. First windows (a
sentence's first audio) go first; an idle decoder waits at most ``gather_seconds`` for companions.
At every flow step each member is checked: one who hung up leaves at once, the others go on. If the
shared call fails, each member is tried alone, so only a window that fails alone fails.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cloud_server.tts.handoff import Handoff
from cloud_server.tts.thread_route import ThreadRoute

_LOGGER = logging.getLogger(__name__)
_BATCH_JOBS: ThreadRoute[list[FlowJob]] = ThreadRoute()
"""The members of the batch this thread is solving (the flow-step check reads them)."""
IDLE_POLL_SECONDS = 0.5


@dataclass
class FlowJob(Handoff):
    """One caller's window as the library hands it to the flow decoder, and where its mel goes."""

    mu: torch.Tensor
    """(1, 80, T): the encoder's output over the voice prompt and the window's tokens."""
    mask: torch.Tensor
    """(1, 1, T)."""
    spks: torch.Tensor
    """(1, 80): the voice's speaker embedding, projected."""
    cond: torch.Tensor
    """(1, 80, T): the prompt's mel, zeros after it."""
    noise: torch.Tensor
    """(1, 80, T): the starting noise (the library draws it per call)."""
    n_timesteps: int
    meanflow: bool
    first: bool
    """A sentence's first window: its caller's first audio, so it goes ahead of later windows."""
    check: Callable[[], None]
    """Raises to take the window out (hang-up, deadline); what it raises is the caller's result."""

    @property
    def frames(self) -> int:
        return int(self.mu.shape[-1])

    @property
    def kind(self) -> tuple[int, bool]:
        return (self.n_timesteps, self.meanflow)


@dataclass
class VocoderStats:
    """Counters for the benchmark and tests."""

    batches: int = 0
    windows: int = 0
    largest_batch: int = 0
    solve_seconds: float = 0.0
    retried_alone: int = 0


class _AllLeft(Exception):
    """Every member of the batch hung up: stop solving."""


def check_batch_members() -> bool:
    """At a flow step: on the batch thread, take out members who hung up and say True; elsewhere False."""
    jobs = _BATCH_JOBS.get()
    if jobs is None:
        return False
    for job in jobs:
        if not job.done.is_set():
            try:
                job.check()
            except Exception as err:
                job.finish(None, err)
    if all(job.done.is_set() for job in jobs):
        raise _AllLeft()
    return True


class VocoderBatcher:
    """The one S3Gen flow-decoder thread of a loaded model; ``submit`` from any thread."""

    def __init__(
        self, decode: Callable[..., Any], *, gather_seconds: float, max_windows: int, autocast: Callable[[], Any]
    ) -> None:
        self.decode = decode
        """The flow decoder called as the library calls it (returns (mel, None))."""
        self.gather_seconds = gather_seconds
        self.max_windows = max_windows
        self.stats = VocoderStats()
        self._autocast = autocast
        self._changed = threading.Condition()
        self._line: list[tuple[int, int, FlowJob]] = []
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="s3gen-batch", daemon=True)
        self._thread.start()

    def submit(self, job: FlowJob) -> FlowJob:
        """Queue a window; first windows go ahead of later ones, then arrival order."""
        with self._changed:
            if self._closed:
                job.finish(None, RuntimeError("the S3Gen batch is closed"))
                return job
            heapq.heappush(self._line, (0 if job.first else 1, next(self._order), job))
            self._changed.notify_all()
        return job

    def close(self) -> None:
        """Stop the thread; windows still waiting end with an error."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout=30.0)

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                jobs = self._take()
                if jobs is None:
                    break
                if jobs:
                    with self._autocast():
                        self._run_batch(jobs)
        with self._changed:
            left, self._line = self._line, []
        for _, _, job in left:
            job.finish(None, RuntimeError("the S3Gen batch is closed"))

    def _take(self) -> list[FlowJob] | None:
        """The next batch (None once closed): what waits now; into an idle decoder, who comes within the window."""
        with self._changed:
            if not self._line:
                self._changed.wait(IDLE_POLL_SECONDS)
                until = time.monotonic() + self.gather_seconds
                while (
                    self._line and not self._closed and len(self._line) < self.max_windows
                    and (left := until - time.monotonic()) > 0
                ):
                    self._changed.wait(left)
            if self._closed:
                return None
            taken: list[FlowJob] = []
            kept: list[tuple[int, int, FlowJob]] = []
            while self._line and len(taken) < self.max_windows:
                entry = heapq.heappop(self._line)
                job = entry[2]
                if taken and job.kind != taken[0].kind:  # another step count: next batch
                    kept.append(entry)
                elif not job.done.is_set():
                    taken.append(job)
            for entry in kept:
                heapq.heappush(self._line, entry)
        return taken

    def _run_batch(self, jobs: list[FlowJob]) -> None:
        live = []
        for job in jobs:
            try:
                job.check()  # hung up while waiting: not solved at all
            except Exception as err:
                job.finish(None, err)
            else:
                live.append(job)
        if not live:
            return
        try:
            self._solve(live)
        except Exception as err:
            if len(live) == 1:
                live[0].finish(None, err)
                return
            _LOGGER.warning("S3Gen batch of %d windows failed (%s): each is tried alone", len(live), err)
            for job in live:
                if job.done.is_set():
                    continue
                self.stats.retried_alone += 1
                try:
                    self._solve([job])
                except Exception as alone:
                    job.finish(None, alone)

    def _solve(self, jobs: list[FlowJob]) -> None:
        """One call of the library's decoder for every member, padded to the longest window."""
        started = time.monotonic()
        length = max(job.frames for job in jobs)

        def stack(name: str) -> torch.Tensor:
            return torch.cat([_pad(getattr(job, name), length) for job in jobs])

        try:
            with _BATCH_JOBS.using(jobs):
                mel, _ = self.decode(
                    mu=stack("mu"), mask=stack("mask"), spks=torch.cat([job.spks for job in jobs]), cond=stack("cond"),
                    n_timesteps=jobs[0].n_timesteps, noised_mels=stack("noise"), meanflow=jobs[0].meanflow,
                )
        except _AllLeft:
            return
        finally:
            self.stats.solve_seconds += time.monotonic() - started
        for row, job in enumerate(jobs):
            job.finish(mel[row : row + 1, :, : job.frames].clone())
        self.stats.batches += 1
        self.stats.windows += len(jobs)
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))


def _pad(frames: torch.Tensor, length: int) -> torch.Tensor:
    """(1, C, T) padded with zeros at the end of T to ``length`` (a zero mask hides the padding)."""
    return F.pad(frames, (0, length - frames.shape[-1]))
