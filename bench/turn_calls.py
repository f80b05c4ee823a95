"""Turn-taking at the call level: the corpus asked, question after question, in one whole call through the real phone.

``bench.turn_taking`` counts where the endpointer cuts; this counts what the caller lives through.
The phone is the ``--whole-call`` path of ``python -m pi_client`` (built by its own ``_build``:
Silero, Smart Turn, Whisper, speculative STT, barge-in listening), in real time, against a real
``cloud_server`` (Piper voice) behind the Ollama stand-in. A cut inside a pause is harmless when
the caller's next word comes before the reply's first audio: it cancels the request and the same
utterance goes on (pi_client/call/barge_in.py). Per question, from the call's clock: the requests
sent, the replies that played, whether the one answered request held the whole question, and any
reply audio heard before the caller's last word (a premature reply, the cut-off the caller notices).
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.turn_corpus import LEAD_SECONDS, RATE, Question
from common.config import PiSTTConfig, config_from_dict

_LOGGER = logging.getLogger("bench.turn_calls")
GREETING_SECONDS = 4.0
"""Silence at the start of the call: the phone's greeting plays, the caller waits."""
REPLY = "All right. "
"""The stand-in's reply to every question (under a second of Piper speech, over before the next question)."""
TAIL_SECONDS = 2.5
"""Silence kept after each question's last word before the next one's lead (the corpus has 3 s)."""
PLACEMENTS = {"pi": {}, "server": {"stt": {"use_server": True}}}
"""STT on the Pi (speculative Whisper) and on the server (/process-audio)."""


@dataclass
class Asked:
    """One question of the call and what became of it."""

    question: Question
    start: float
    """Call seconds where the question's recording (its lead silence included) starts."""
    end: float
    """Call seconds where the next question's starts."""
    sent: list[float] = field(default_factory=list)
    """Call seconds at which requests left the phone."""
    answered: list[tuple[Any, float]] = field(default_factory=list)
    """The phone's turns whose reply played to its end, with the call second their request left."""
    went_on: int = 0
    """Times the caller went on talking before any reply played (the utterance continued)."""
    premature_audio: float | None = None
    """Call seconds of reply audio heard before the caller's last word (None: none)."""
    first_audio: float | None = None
    """Call seconds of the first reply audio after the caller's last word."""

    @property
    def speech_end(self) -> float:
        return self.start + self.question.speech_end

    @property
    def whole(self) -> bool:
        """Answered once, and the one answered request held the question's first and last words."""
        if len(self.answered) != 1:
            return False
        heard = re.sub(r"[^a-z ]", "", (self.answered[0][0].transcript or "").lower()).split()
        words = re.sub(r"[^a-z ]", "", self.question.text.lower()).split()
        return bool(heard) and heard[0] == words[0] and heard[-1] == words[-1]

    @property
    def request_sent(self) -> float | None:
        """End of speech → the answered request sent, in seconds (the phone's share of the silence)."""
        return self.answered[-1][1] - self.speech_end if self.answered else None


class _Watch(logging.Handler):
    """Notes the call second of each "went on talking" merge (the runner logs it)."""

    def __init__(self, line: Any) -> None:
        super().__init__(logging.INFO)
        self.line = line
        self.went_on: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "went on talking" in record.getMessage():
            self.went_on.append(self.line.now / RATE)


class _SentClock:
    """The phone's server client, noting the call second at which each request leaves."""

    def __init__(self, client: Any, line: Any) -> None:
        self._client = client
        self._line = line
        self.sent: list[tuple[float, float]] = []
        """(monotonic time, call seconds) of each request."""

    def open(self, request: Any) -> Any:
        self.sent.append((time.monotonic(), self._line.now / RATE))
        return self._client.open(request)

    def call_seconds(self, monotonic: float) -> float:
        """Call seconds of the request sent nearest ``monotonic`` (a turn's request_at)."""
        return min(self.sent, key=lambda s: abs(s[0] - monotonic))[1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _reply_spans(earpiece: np.ndarray, level: int = 300, hop: float = 0.02) -> list[tuple[float, float]]:
    """(start, end) call seconds of sound in the earpiece, gaps under 0.3 s bridged."""
    step = round(hop * RATE)
    env = np.abs(earpiece[: earpiece.size - earpiece.size % step]).reshape(-1, step).max(axis=1) > level
    spans: list[tuple[float, float]] = []
    for i in np.flatnonzero(env):
        t = float(i * hop)
        if spans and t - spans[-1][1] < 0.3:
            spans[-1] = (spans[-1][0], t + hop)
        else:
            spans.append((t, t + hop))
    return spans


async def _call(server: Any, questions: list[Question], placement: str, workdir: Path) -> list[Asked]:
    from common.wav import read_wav_pcm16, write_wav
    from pi_client.__main__ import _build, _parse_args
    from pi_client.call.whole_call import run_whole_call

    lead = np.zeros(round(GREETING_SECONDS * RATE), dtype=np.int16).tobytes()
    asked, at, parts = [], len(lead) / 2 / RATE, [lead]
    for q in questions:
        parts.append(q.pcm[: round((q.speech_end + TAIL_SECONDS) * RATE) * 2])
        length = len(parts[-1]) / 2 / RATE
        asked.append(Asked(q, at, at + length))
        at += length
    call, ear = workdir / f"call-{placement}.wav", workdir / f"ear-{placement}.wav"
    write_wav(str(call), b"".join(parts), RATE)
    argv = ["--input-wav", str(call), "--output-wav", str(ear), "--whole-call"]
    pi = {"cache_dir": str(workdir / "cache"), "server_url": server.url, **PLACEMENTS[placement]}
    stages = await _build(_parse_args(argv), config_from_dict({"pi": pi}), server.key)
    phone = stages.phone
    phone.turns = deque(maxlen=4 * len(questions))  # every turn of the call, not only the latest
    clock = phone._client = _SentClock(phone._client, stages.line)  # noqa: SLF001 - a bench's probe
    watch = _Watch(stages.line)
    runner_log = logging.getLogger("pi_client.call.runner")
    level = runner_log.level
    runner_log.addHandler(watch)
    runner_log.setLevel(logging.INFO)  # the merges are logged at INFO
    runner_log.propagate = False
    try:
        await run_whole_call(phone, stages.line, stages.microphone, ear)
    finally:
        runner_log.removeHandler(watch)
        runner_log.setLevel(level)
        runner_log.propagate = True
        stages.client.close()
        if stages.speculator is not None:
            await asyncio.to_thread(stages.speculator.join, 10.0)
    speculator = getattr(phone._transcribe_fn, "__self__", None)  # noqa: SLF001 - a bench's probe
    if speculator is not None:
        _LOGGER.info("speculative Whisper: %d runs, %d transcripts used", speculator.runs, speculator.used)
    earpiece = np.frombuffer(read_wav_pcm16(str(ear), RATE)[0], dtype="<i2")
    spans = [s for s in _reply_spans(earpiece) if s[0] >= asked[0].start + LEAD_SECONDS]
    for a in asked:  # from the question's first word to the next one's
        a.sent = [t for _, t in clock.sent if a.start + LEAD_SECONDS <= t < a.end + LEAD_SECONDS]
        a.went_on = sum(1 for t in watch.went_on if a.start + LEAD_SECONDS <= t < a.end + LEAD_SECONDS)
        inside = [s for s, _ in spans if a.start + LEAD_SECONDS <= s < a.speech_end]
        a.premature_audio = inside[0] if inside else None
        a.first_audio = next((s for s, _ in spans if a.speech_end <= s < a.end), None)
    for turn in phone.turns:
        if turn.outcome is not None and turn.outcome.value == "done" and turn.request_at is not None:
            when = clock.call_seconds(turn.request_at)
            asked_before = [a for a in asked if a.start + LEAD_SECONDS <= when] or asked[:1]
            # The question it answers: of those asked by then, the one sharing most words with what was heard
            # (a slow turn's request can leave after the next question has begun).
            owner = max(asked_before, key=lambda a: (_shared_words(a.question.text, turn.transcript), a.start))
            owner.answered.append((turn, when))
    return asked


def _words(text: str | None) -> set[str]:
    return set(re.sub(r"[^a-z ]", "", (text or "").lower()).split())


def _shared_words(question: str, heard: str | None) -> int:
    return len(_words(question) & _words(heard))


def run(questions: list[Question], placements: tuple[str, ...]) -> dict[str, list[Asked]]:
    """One whole call per STT placement, the whole corpus in each."""
    from tests.ollama_standin import OllamaStandIn
    from tests.server_rig import start_server

    results = {}
    with tempfile.TemporaryDirectory() as tmp, OllamaStandIn() as standin:
        standin.script(REPLY)
        server = start_server(Path(tmp) / "server", standin.url)
        try:
            for placement in placements:
                workdir = Path(tmp) / f"call-{placement}"
                workdir.mkdir()
                results[placement] = asyncio.run(_call(server, questions, placement, workdir))
                for a in results[placement]:
                    _LOGGER.info(
                        "call %-6s %-8s %-44s sent %s answered %s went on %d premature %s  %r",
                        placement, a.question.kind, a.question.text[:44],
                        [round(t - a.speech_end, 2) for t in a.sent],
                        [round(t - a.speech_end, 2) for _, t in a.answered], a.went_on,
                        "-" if a.premature_audio is None else f"{a.premature_audio - a.start:.2f}",
                        [t.transcript for t, _ in a.answered],
                    )
        finally:
            server.stop()
    return results


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def describe() -> list[str]:
    """The paragraph above the call-level table."""
    return [
        "**At the call level** (bench/turn_calls.py, same run): the same questions, one after the other in one "
        "whole call per STT placement, through the phone as `python -m pi_client --whole-call` builds it "
        "(Silero, Smart Turn, speculative Whisper on "
        f"{PiSTTConfig().threads} threads or the server's Whisper, barge-in listening), in real time, against "
        "`cloud_server` (Piper voice) and the Ollama stand-in answering at once. A *reply heard before the last "
        "word* is reply audio in the earpiece between the question's first and last words: the premature "
        "cut-off a caller notices. *Answered once, whole question*: one reply played, and its request held "
        "the question's first and last words. *Cancelled*: requests sent and dropped before any audio played "
        "because the caller went on. Seconds are medians on the call's clock over the answered questions; "
        "the reply's first audio waits for 1 s of the caller's silence (`pi.turns.reply_after_silence_seconds`).",
    ]


def report(results: dict[str, list[Asked]], turn_level: dict[str, str]) -> list[str]:
    """The call-level table, with the turn level's premature cut-offs beside it."""
    lines = [
        "| STT | questions | premature cut-offs, turn level (Smart Turn) | reply heard before the last word "
        "(call level) | answered once, whole question | requests cancelled before audio | went on (merged) | "
        "end of speech → request sent | end of speech → first reply audio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for placement, asked in results.items():
        for kind in ("complete", "paused"):
            rows = [a for a in asked if a.question.kind == kind]
            cancelled = sum(max(0, len(a.sent) - len(a.answered)) for a in rows)
            lines.append(
                f"| {placement} | {kind} ({len(rows)}) | {turn_level.get(kind, '-')} | "
                f"**{sum(a.premature_audio is not None for a in rows)}/{len(rows)}** | "
                f"{sum(a.whole for a in rows)}/{len(rows)} | {cancelled} | {sum(a.went_on for a in rows)} | "
                f"**{_median([s for a in rows if (s := a.request_sent) is not None])}** | "
                f"{_median([a.first_audio - a.speech_end for a in rows if a.first_audio is not None])} |"
            )
    return lines


def main() -> None:
    """Run the call-level measurement alone and print its table (bench.turn_taking writes it to the docs)."""
    import argparse

    from bench.turn_corpus import Speaker, build
    from common.whisper import load_whisper

    parser = argparse.ArgumentParser(prog="python -m bench.turn_calls", description=__doc__.splitlines()[0])
    parser.add_argument("--placements", nargs="+", default=list(PLACEMENTS), choices=list(PLACEMENTS))
    parser.add_argument("--only", type=int, default=None, help="the first N questions of each kind")
    parser.add_argument("--match", default=None, help="only the questions containing this text")
    parser.add_argument("--kind", choices=("complete", "paused"), default=None, help="only questions of this kind")
    parser.add_argument("--debug", action="store_true", help="the phone's own log too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("pi_client", "faster_whisper", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("pi_client.call.runner").setLevel(logging.INFO)
    if args.debug:
        logging.getLogger("pi_client").setLevel(logging.INFO)
    questions = build(Speaker(load_whisper(None, cpu_threads=2, setting="bench")))
    if args.kind:
        questions = [q for q in questions if q.kind == args.kind]
    if args.match:
        questions = [q for q in questions if args.match.lower() in q.text.lower()]
    if args.only:
        kinds = ("complete", "paused")
        questions = [q for kind in kinds for q in [q for q in questions if q.kind == kind][: args.only]]
    for line in report(run(questions, tuple(args.placements)), {}):
        print(line)


if __name__ == "__main__":
    main()
