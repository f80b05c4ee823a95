"""Barge-in measured on whole calls: first word to a silent earpiece and to the request cancelled, and false
pauses and barge-ins with the echo at -10 dB.

Run: ``python -m bench.barge_in [--calls 20] [--echo-db -10] [--speed 1]``. Each call is the
``--whole-call`` path of ``python -m pi_client`` (built by its own ``_build``), in real time, against
a real ``cloud_server`` (Piper voice) behind the Ollama stand-in: the caller asks a question,
hears the reply leak back into the microphone at ``--echo-db``, and talks over it about three
seconds in. From the call's clock: cuts and pauses before the caller's first word (false barge-ins
and false pauses: the reply's own echo), whether the interruption was caught, and the time from
the first sample of the caller's first word to the earpiece going silent (the pause, or the cut
when nothing paused) and to the cut (the barge-in confirmed, the request closed), overall and per
phrase. Written to docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import statistics
import tempfile
import threading
from pathlib import Path

import numpy as np

from bench.rig import percentile, piper_pcm, replace_section
from common.config import config_from_dict

QUESTIONS = (
    "What is the capital of France?",
    "How tall is the Eiffel Tower?",
    "Who wrote Romeo and Juliet?",
    "What is the weather like today?",
)
INTERRUPTIONS = (
    "Wait, what about Italy?",
    "Hold on, I have another question.",
    "Sorry, can you say that again?",
    "Stop, tell me about London instead.",
    "Actually, never mind that.",
)
REPLY = tuple(
    step
    for i in range(8)
    for step in (f"Here is a long answer, sentence number {i + 1}, which goes on for a while. ", 0.3)
)
RATE = 16000


def _first_sound(pcm: bytes, level: float = 0.02) -> float:
    x = np.abs(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768)
    return float(np.flatnonzero(x > level)[0] / RATE)


async def _one_call(server: object, question: str, interruption: str, workdir: Path, args: argparse.Namespace) -> dict:
    from pi_client.__main__ import _build, _parse_args
    from pi_client.call.whole_call import run_whole_call

    lead = b"\0\0" * 3 * RATE
    asked = piper_pcm(question)
    gap = b"\0\0" * round(args.gap * RATE)
    said = piper_pcm(interruption)
    recording = lead + asked + gap + said + b"\0\0" * RATE
    onset = (len(lead) + len(asked) + len(gap)) / 2 / RATE + _first_sound(said)
    call, ear = workdir / "call.wav", workdir / "ear.wav"
    from common.wav import write_wav

    write_wav(str(call), recording, RATE)
    argv = ["--input-wav", str(call), "--output-wav", str(ear), "--whole-call", "--echo-db", str(args.echo_db)]
    argv += ["--clock-speed", str(args.speed)] if args.speed != 1 else []
    pi = {"cache_dir": str(workdir / "cache"), "server_url": server.url}  # type: ignore[attr-defined]
    cfg = config_from_dict({"pi": {**pi, "turns": {"barge_in": {"pause_on_speech": not args.no_pause}}}})
    stages = await _build(_parse_args(argv), cfg, server.key)  # type: ignore[attr-defined]
    try:
        await run_whole_call(stages.phone, stages.line, stages.microphone, ear)
    finally:
        stages.client.close()
    sink = stages.sink
    window = (onset, onset + 3.0)
    caught = [c for c in sink.cuts if window[0] <= c <= window[1]]
    silent = sorted(t for t in [*sink.pauses, *sink.cuts] if window[0] <= t <= window[1])
    return {
        "false": sum(c < onset for c in sink.cuts),
        "false_pauses": sum(p < onset for p in sink.pauses),
        "resumed": len(sink.resumes),
        "caught": bool(caught),
        "silent": silent[0] - onset if silent else None,
        "cancelled": caught[0] - onset if caught else None,
        "replied": next((t.first_audio_at for t in stages.phone.turns), None) is not None,
        "first_word": _first_word_heard(interruption, [t.transcript or "" for t in stages.phone.turns][1:]),
    }


def _first_word_heard(interruption: str, transcripts: list[str]) -> bool:
    """Whisper's transcript of the interruption (the next turn) has its first word ("Wait", "Hold", ...)."""
    first = interruption.split()[0].strip(",").lower()
    return any(first in re.sub(r"[^a-z ]", " ", text.lower()).split() for text in transcripts)


def _row(name: str, values: list[float]) -> str:
    if not values:
        return f"| {name} | - | - | - |\n"
    return f"| {name} | {statistics.median(values):.2f} s | {percentile(values, 90):.2f} s | {max(values):.2f} s |\n"


def _report(results: list[tuple[str, dict]], args: argparse.Namespace, load: tuple[float, float]) -> str:
    rows = [r for _, r in results]
    n = len(rows)
    silent = [r["silent"] for r in rows if r["silent"] is not None]
    cancelled = [r["cancelled"] for r in rows if r["cancelled"] is not None]
    paused_replies = sum(r["false_pauses"] > 0 for r in rows)
    setting = (
        "`pi.turns.barge_in.pause_on_speech` false (no pause), `min_speech_seconds` 0.4"
        if args.no_pause
        else "`pi.turns.barge_in`: `pause_after_seconds` 0.1, `min_speech_seconds` 0.4, `resume_after_seconds` 0.5"
    )
    body = (
        f"Whole calls (`python -m bench.barge_in --calls {args.calls} --echo-db {args.echo_db:g}`), the reply leaking"
        f" back at {args.echo_db:g} dB, cancelled by WebRTC AEC3; clock speed {args.speed:g}; {setting};"
        f" load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (2 cores).\n\n"
        "| measure | value |\n|---|---|\n"
        f"| replies interrupted by their own echo (false barge-ins) | {sum(r['false'] for r in rows)} of {n} |\n"
        f"| replies paused by their own echo (false pauses, resumed) | {paused_replies} of {n}"
        f" ({sum(r['false_pauses'] for r in rows)} pauses) |\n"
        f"| pauses resumed, all calls (echo, or a gap inside the interruption) | {sum(r['resumed'] for r in rows)} |\n"
        f"| interruptions caught | {sum(r['caught'] for r in rows)} of {n} |\n"
        f"| interruption's first word in its transcript (Whisper) | {sum(r['first_word'] for r in rows)} of {n} |\n\n"
        "| from the caller's first word to | median | p90 | max |\n|---|---|---|---|\n"
        + _row("a silent earpiece (the pause)", silent)
        + _row("the request cancelled (barge-in confirmed)", cancelled)
        + "\n| first words | calls | silent earpiece, median | request cancelled, median |\n|---|---|---|---|\n"
    )
    for phrase in INTERRUPTIONS:
        mine = [r for said, r in results if said == phrase]
        if not mine:
            continue
        quiet = [r["silent"] for r in mine if r["silent"] is not None]
        cut = [r["cancelled"] for r in mine if r["cancelled"] is not None]
        head = phrase.split(",")[0]
        body += (
            f"| {head} | {len(mine)} | {statistics.median(quiet) if quiet else float('nan'):.2f} s"
            f" | {statistics.median(cut) if cut else float('nan'):.2f} s |\n"
        )
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--echo-db", type=float, default=-10.0)
    parser.add_argument("--speed", type=float, default=1.0, help="call clock speed (1: real time)")
    parser.add_argument("--gap", type=float, default=4.5, help="seconds from the question's end to the interruption")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/PERFORMANCE.md alone")
    parser.add_argument("--no-pause", action="store_true", help="pi.turns.barge_in.pause_on_speech off (compare)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from tests.ollama_standin import OllamaStandIn
    from tests.server_rig import start_server

    results: list[tuple[str, dict]] = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, OllamaStandIn() as standin:
        server = start_server(Path(tmp) / "server", standin.url)
        try:
            for i in range(args.calls):
                standin.script(*REPLY)
                seen = len(standin.chat_requests())

                def shorten(seen: int = seen) -> None:  # the answer to the interruption: short
                    for _ in range(600):
                        if len(standin.chat_requests()) > seen:
                            standin.script("All right. ")
                            return
                        threading.Event().wait(0.05)

                threading.Thread(target=shorten, daemon=True).start()
                workdir = Path(tmp) / f"call{i}"
                workdir.mkdir()
                question, interruption = QUESTIONS[i % len(QUESTIONS)], INTERRUPTIONS[i % len(INTERRUPTIONS)]
                result = asyncio.run(_one_call(server, question, interruption, workdir, args))
                print(f"call {i + 1}: {interruption!r} {result}", flush=True)
                results.append((interruption, result))
        finally:
            server.stop()
    body = _report(results, args, (load, os.getloadavg()[0]))
    print(body)
    if not args.no_write:
        replace_section("docs/PERFORMANCE.md", "barge-in", "## Barge-in\n\n" + body)


if __name__ == "__main__":
    main()
