"""Barge-in measured on whole calls: first word to a silent earpiece, and false barge-ins with the echo at -10 dB.

Run: ``python -m bench.barge_in [--calls 20] [--echo-db -10] [--speed 1]``. Each call is the
``--whole-call`` path of ``python -m pi_client`` (built by its own ``_build``), in real time, against
a real ``cloud_server`` (Piper voice) behind the Ollama stand-in: the caller asks a question,
hears the reply leak back into the microphone at ``--echo-db``, and talks over it about three
seconds in. From the call's clock: the cut before the caller's first word (a false barge-in: the
reply interrupted itself), whether the interruption was caught, and the time from the first
sample of the caller's first word to the earpiece going silent. Written to docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
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
    cfg = config_from_dict({"pi": {"cache_dir": str(workdir / "cache"), "server_url": server.url}})  # type: ignore[attr-defined]
    stages = await _build(_parse_args(argv), cfg, server.key)  # type: ignore[attr-defined]
    try:
        await run_whole_call(stages.phone, stages.line, stages.microphone, ear)
    finally:
        stages.client.close()
    cuts = stages.sink.cuts
    reply_started = next((t.first_audio_at for t in stages.phone.turns), None) is not None
    false = [c for c in cuts if c < onset]
    caught = [c for c in cuts if onset <= c <= onset + 3.0]
    return {
        "false": len(false),
        "caught": bool(caught),
        "latency": caught[0] - onset if caught else None,
        "replied": reply_started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--echo-db", type=float, default=-10.0)
    parser.add_argument("--speed", type=float, default=1.0, help="call clock speed (1: real time)")
    parser.add_argument("--gap", type=float, default=4.5, help="seconds from the question's end to the interruption")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/PERFORMANCE.md alone")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from tests.ollama_standin import OllamaStandIn
    from tests.server_rig import start_server

    results = []
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
                results.append(result)
        finally:
            server.stop()
    latencies = [r["latency"] for r in results if r["latency"] is not None]
    false = sum(r["false"] for r in results)
    caught = sum(r["caught"] for r in results)
    body = (
        f"Whole calls (`python -m bench.barge_in --calls {args.calls} --echo-db {args.echo_db:g}`), the reply leaking"
        f" back at {args.echo_db:g} dB, cancelled by WebRTC AEC3; clock speed {args.speed:g};"
        f" `pi.turns.barge_in.min_speech_seconds` 0.4.\n\n"
        "| measure | value |\n|---|---|\n"
        f"| replies interrupted by their own echo (false barge-ins) | {false} of {len(results)} |\n"
        f"| interruptions caught | {caught} of {len(results)} |\n"
        f"| first word → silent earpiece, median | {statistics.median(latencies):.2f} s |\n"
        f"| first word → silent earpiece, p90 | {percentile(latencies, 90):.2f} s |\n"
        f"| first word → silent earpiece, max | {max(latencies):.2f} s |\n"
    )
    print(body)
    if not args.no_write:
        replace_section("docs/PERFORMANCE.md", "barge-in", "## Barge-in\n\n" + body)


if __name__ == "__main__":
    main()
