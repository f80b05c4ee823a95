"""End of turn on spoken questions: the silence rule against Smart Turn, same corpus, same run.

Run: ``python -m bench.turn_taking [--no-write]``. Each question of bench/turn_corpus.py goes
through the phone's own endpointer (pi_client/turns/endpoint.py, pure and frame-timed) with the
real Silero VAD, once with the silence rule and once with Smart Turn v3.2 asked at the short
silence; the utterance it cuts is transcribed by the real Whisper tiny.en. Audio time is exact
(frames), model time is measured on this machine and added where a live phone would wait for it.
Writes the ``turn-taking`` section of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import turn_calls
from bench.rig import percentile, replace_section
from bench.turn_corpus import RATE, Question, Speaker, build
from common.config import PiSTTConfig, SmartTurnConfig, VADConfig
from common.whisper import load_whisper
from pi_client.audio.capture import BLOCK_SAMPLES
from pi_client.turns.endpoint import Endpointer, EndpointEvent
from pi_client.turns.smart_turn import SmartTurn
from pi_client.turns.stt import WhisperTranscriber
from pi_client.turns.vad import SileroVad

_LOGGER = logging.getLogger("bench.turn_taking")
ROOT = Path(__file__).resolve().parent.parent
FRAME_SECONDS = BLOCK_SAMPLES / RATE
FRAME_BYTES = BLOCK_SAMPLES * 2
MODES = ("silence", "smart_turn")
EARLY_SPECULATION = FRAME_SECONDS
"""pi.stt.speculate_after_silence_seconds tried beside the default: Silero's first silent frame."""
EARLY_TOLERANCE = 0.05
"""A decision this much before the last word's end (seconds) is a premature cut-off, not frame rounding."""


@dataclass
class Decision:
    """How one question ended in one mode."""

    question: Question
    mode: str
    ended_by: str = ""
    decided_at: float = 0.0
    """Audio seconds at the end decision, plus the model's time when the model decided."""
    heard_until: float = 0.0
    """Audio seconds at the end decision (without the model's time)."""
    checks: int = 0
    turn_cpu: float = 0.0
    turn_wall: list[float] = field(default_factory=list)
    vad_cpu: float = 0.0
    stt_wall: float = 0.0
    """Whisper's time on the utterance once the turn ended (no speculation)."""
    stt_cpu: float = 0.0
    """Whisper CPU seconds of the turn with speculation: every run, the dropped ones too."""
    transcript: str = ""
    speculations: list[tuple[float, bytes]] = field(default_factory=list)
    """Candidate ends: (audio seconds when Whisper would start, the audio it gets)."""
    speculation_kept: bool = False
    """The last speculation stands (no speech after it): its transcript is the turn's."""
    speculative_sent: float = 0.0
    """End of speech → request sent with speculation, in seconds."""
    early_sent: float = 0.0
    """The same, the speculation started at Silero's first silent frame (:data:`EARLY_SPECULATION`)."""
    early_runs: int = 0
    """Whisper runs started with that early speculation."""

    @property
    def premature(self) -> bool:
        return self.decided_at < self.question.speech_end - EARLY_TOLERANCE

    @property
    def delay(self) -> float:
        """End of speech → end of turn decided, in seconds."""
        return self.decided_at - self.question.speech_end

    @property
    def whole(self) -> bool:
        """The transcript ends with the question's last word (nothing lost to a cut)."""
        last = re.sub(r"[^a-z]", "", self.question.text.split()[-1].lower())
        return re.sub(r"[^a-z ]", "", self.transcript.lower()).split()[-1:] == [last]


def decide(
    question: Question,
    mode: str,
    probs: list[float],
    vad_cpu_per_frame: float,
    smart_turn: SmartTurn,
    speculate_after: float | None = None,
) -> tuple[Decision, bytes]:
    """Run the endpointer over the question (as listen() does); the decision and the utterance it would send.

    ``speculate_after``: speculation starts after this much silence when sooner than the check
    (pi.stt.speculate_after_silence_seconds); None: at the check."""

    def heard_so_far() -> bytes:
        return question.pcm[endpointer.utterance_start_frame * FRAME_BYTES : (endpointer.frame_index + 1) * FRAME_BYTES]

    turn_cfg = SmartTurnConfig()
    candidate = None if mode == "smart_turn" else turn_cfg.check_after_silence_seconds
    if speculate_after is not None and speculate_after < turn_cfg.check_after_silence_seconds:
        candidate = speculate_after
    endpointer = Endpointer(VADConfig(), FRAME_SECONDS, turn_cfg if mode == "smart_turn" else None, candidate)
    result = Decision(question, mode)
    model_wall = 0.0
    speculated_at: int | None = None
    for prob in probs:
        event = endpointer.process(prob)
        if speculated_at not in (None, endpointer.last_speech_frame):
            speculated_at = None  # the caller went on: the speculation is dropped
        if event in (EndpointEvent.TURN_CHECK, EndpointEvent.CANDIDATE_END) and speculated_at is None:
            result.speculations.append(((endpointer.frame_index + 1) * FRAME_SECONDS, heard_so_far()))
            speculated_at = endpointer.last_speech_frame
        if event is EndpointEvent.TURN_CHECK:
            cpu, wall = time.process_time(), time.perf_counter()
            finished, _prob = smart_turn.is_finished(heard_so_far())
            model_wall = time.perf_counter() - wall
            result.turn_cpu += time.process_time() - cpu
            result.turn_wall.append(model_wall)
            result.checks += 1
            event = endpointer.turn_verdict(finished)
        if event is EndpointEvent.UTTERANCE_ENDED:
            break
    result.ended_by = endpointer.ended_by or "audio_end"
    result.decided_at = result.heard_until = (endpointer.frame_index + 1) * FRAME_SECONDS
    if result.ended_by == "model":
        result.decided_at += model_wall
    result.vad_cpu = (endpointer.frame_index + 1) * vad_cpu_per_frame
    result.speculation_kept = speculated_at is not None
    return result, heard_so_far()


def transcribe(stt: WhisperTranscriber, pcm: bytes) -> tuple[str, float, float]:
    """(text, wall seconds, CPU seconds) of one Whisper run."""
    cpu, wall = time.process_time(), time.perf_counter()
    text = stt.transcribe(pcm)
    return text, time.perf_counter() - wall, time.process_time() - cpu


def hear(stt: WhisperTranscriber, result: Decision, utterance: bytes) -> None:
    """Whisper as the phone runs it: once at the end, or speculatively (one worker, every candidate end)."""
    result.transcript, result.stt_wall, end_cpu = transcribe(stt, utterance)
    speculate(stt, result, end_cpu)


def speculate(stt: WhisperTranscriber, result: Decision, end_cpu: float) -> None:
    """The request's send time with speculative Whisper (``result.stt_wall``: one run on the whole utterance)."""
    sent = result.decided_at + result.stt_wall
    busy_until = 0.0
    for i, (start, pcm) in enumerate(result.speculations):
        _text, wall, cpu = transcribe(stt, pcm)
        result.stt_cpu += cpu
        busy_until = max(start, busy_until) + wall  # one worker: a run waits for the one before
        if i == len(result.speculations) - 1 and result.speculation_kept:
            sent = max(result.decided_at, busy_until)
    if not result.speculation_kept:  # the last guess was dropped: Whisper runs again at the end
        result.stt_cpu += end_cpu
        sent = max(result.decided_at, busy_until) + result.stt_wall
    result.speculative_sent = sent - result.question.speech_end


def run(threads: int) -> list[Decision]:
    """Every question through both modes."""
    stt = WhisperTranscriber(PiSTTConfig(threads=threads))
    questions = build(Speaker(load_whisper(None, cpu_threads=threads, setting="bench")))
    vad, smart_turn = SileroVad(), SmartTurn(SmartTurnConfig())
    results = []
    for question in questions:
        frames = [question.pcm[i : i + FRAME_BYTES] for i in range(0, len(question.pcm) - FRAME_BYTES + 1, FRAME_BYTES)]
        vad.reset()
        cpu = time.process_time()
        probs = vad.speech_probabilities(frames)
        vad_cpu = (time.process_time() - cpu) / len(frames)
        for mode in MODES:
            result, utterance = decide(question, mode, probs, vad_cpu, smart_turn)
            hear(stt, result, utterance)
            early, _ = decide(question, mode, probs, vad_cpu, smart_turn, EARLY_SPECULATION)
            early.decided_at, early.stt_wall = result.decided_at, result.stt_wall  # same end, same final run
            speculate(stt, early, 0.0)
            result.early_sent, result.early_runs = early.speculative_sent, len(early.speculations)
            results.append(result)
            _LOGGER.info("%-10s %-8s %-52s by %-6s delay %+.2f s  %r", mode, question.kind, question.text[:52],
                         result.ended_by, result.delay, result.transcript)
    return results


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def report(results: list[Decision], meta: dict[str, object]) -> list[str]:
    """The Markdown section."""
    lines = [
        "## Turn-taking: end of turn on spoken questions (measured here)",
        "",
        f"`python -m bench.turn_taking` on {meta['date']} ({meta['minutes']:.1f} min): {meta['cpus']} CPUs "
        f"(x86_64), load average {meta['load_before']:.1f} at the start, {meta['load_average']:.1f} at the end "
        f"(shared machine), Whisper tiny.en int8 on {meta['threads']} threads, Smart "
        "Turn v3.2 on 1 thread, Silero VAD v6. Corpus (bench/turn_corpus.py): "
        f"{sum(1 for r in results if r.mode == MODES[0] and not r.question.pause)} complete questions and "
        f"{sum(1 for r in results if r.mode == MODES[0] and r.question.pause)} with a 0.5-0.8 s pause between "
        "two words, spoken by Piper with its noise off. Delays are audio time from the end of the last word "
        "(plus the model's inference time where the model decided); a *premature* cut ends the turn inside "
        "the pause. *Request sent* adds Whisper on the cut utterance (medians over the turns not cut early): "
        "the phone's share of the silence; *with speculative Whisper* starts it at each candidate end (0.2 s "
        "of silence, pi.stt.speculative), one run at a time, and uses the last run when no speech followed. "
        "Models are timed one after the other here; live, Smart Turn and Whisper share the cores.",
        "",
        "| mode | questions | median end-of-turn delay | p90 | premature cut-offs | ended by | "
        "whole transcript | end of speech → request sent | … with speculative Whisper | … started at the "
        "first silent frame |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        for kind in ("complete", "paused"):
            rows = [r for r in results if r.mode == mode and r.question.kind == kind]
            on_time = [r.delay for r in rows if not r.premature]
            ends = {by: sum(1 for r in rows if r.ended_by == by) for by in ("model", "silence", "audio_end")}
            lines.append(
                f"| {mode.replace('_', ' ')} | {kind} ({len(rows)}) | **{_median(on_time)}** | "
                f"{percentile(on_time, 90):.2f} | {sum(r.premature for r in rows)}/{len(rows)} | "
                + ", ".join(f"{by} {n}" for by, n in ends.items() if n)
                + f" | {sum(r.whole for r in rows)}/{len(rows)} | "
                f"{_median([r.delay + r.stt_wall for r in rows if not r.premature])} | "
                f"**{_median([r.speculative_sent for r in rows if not r.premature])}** | "
                f"{_median([r.early_sent for r in rows if not r.premature])} |"
            )
    early = [r for r in results if r.premature and r.question.pause]
    gaps = [r.question.pause[1] - r.decided_at for r in early if r.question.pause]
    if gaps:
        lines += ["", f"Every premature cut came inside the pause; the caller's next word followed it by "
                  f"{max(min(gaps), 0.0):.2f}-{max(gaps):.2f} s, sooner than the reply's first audio could play "
                  "(request sent plus the server's first audio, about 0.6 s with the streamed Piper voice above)."]
    decisions = [w for r in results for w in r.turn_wall]
    smart = [r for r in results if r.mode == "smart_turn"]
    by_model = [r.heard_until - r.question.speech_end for r in smart if r.ended_by == "model" and not r.premature]
    lines += [
        "",
        f"Of Smart Turn's delay, the audio part (Silero's lag behind the last word plus the 0.2 s check) is "
        f"**{statistics.median(by_model):.2f} s** (median of the on-time turns it ended); the rest is its "
        "inference time on this machine at that moment.",
        "",
        f"Smart Turn per decision: **{statistics.median(decisions) * 1000:.0f} ms** median "
        f"(p90 {percentile(decisions, 90) * 1000:.0f} ms, {len(decisions)} decisions, always 8 s of audio). "
        "CPU per turn (Smart Turn mode, medians, CPU seconds of this machine): "
        f"VAD {statistics.median(r.vad_cpu for r in smart):.3f}, "
        f"Smart Turn {statistics.median(r.turn_cpu for r in smart):.3f}, "
        f"Whisper {statistics.median(r.stt_cpu for r in smart):.2f} with speculation, dropped runs included "
        f"(one run: wall {statistics.median(r.stt_wall for r in smart):.2f} s on {meta['threads']} threads); "
        f"{sum(len(r.speculations) for r in smart)} Whisper runs for {len(smart)} turns "
        f"({sum(r.early_runs for r in smart)} when speculation starts at the first silent frame).",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Measure, print, write the section of docs/PERFORMANCE.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.turn_taking", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="Whisper CPU threads")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/PERFORMANCE.md")
    parser.add_argument("--placements", nargs="*", default=list(turn_calls.PLACEMENTS),
                        choices=list(turn_calls.PLACEMENTS), help="whole calls with STT here (none: skip them)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("pi_client").setLevel(logging.WARNING)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    started, load_before = time.monotonic(), os.getloadavg()[0]
    results = run(args.threads)
    questions = list({id(r.question): r.question for r in results}.values())
    calls = turn_calls.run(questions, tuple(args.placements)) if args.placements else {}
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0], "load_before": load_before, "threads": args.threads,
            "minutes": (time.monotonic() - started) / 60}
    lines = report(results, meta)
    if calls:
        smart = [r for r in results if r.mode == "smart_turn"]
        turn_level = {k: f"{sum(r.premature for r in smart if r.question.kind == k)}/"
                      f"{sum(r.question.kind == k for r in smart)}" for k in ("complete", "paused")}
        lines += ["", *turn_calls.describe(), "", *turn_calls.report(calls, turn_level)]
    if not args.no_write:
        replace_section(str(ROOT / "docs" / "PERFORMANCE.md"), "turn-taking", "\n".join(lines))
    for line in lines:
        _LOGGER.info("%s", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
