"""Four callers at once vs one, with Chatterbox batched across callers (random weights, this CPU).

Run: ``python -m bench.chatterbox_batch [--tokens 40] [--threads 2] [--no-write]``. Three parts, one
model load, one run each (the machine is shared; the ratios matter, not the seconds):

1. T3 alone: the batch decoder (t3_batch.py) with one sequence, then four, each exactly ``--tokens``
   speech tokens (random weights never stop early): tokens per second of decoding, and with prefill.
2. S3Gen: its flow estimator (where S3Gen's time goes) for one caller's window as the library calls it
   (2 rows: classifier-free guidance), then four callers' windows stacked (8 rows): what batching S3Gen
   could save here. Then the whole S3Gen path for four callers' first windows, per caller one at a
   time (what the server does on a CPU) against the batched path (``vocoder_batch``, the default on
   CUDA: flow encoder and HiFiGAN per caller, one batched flow-decoder call).
3. End to end through the engine (the TTS seam the server uses), streamed: one caller, then four at
   once, batched and serialized (``tts.chatterbox.batch`` off): the slowest caller's first audio against
   one caller's, and aggregate audio seconds per wall second.
The section goes to docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.chatterbox_stream import measure
from bench.rig import replace_section

_LOGGER = logging.getLogger("bench.chatterbox_batch")
ROOT = Path(__file__).resolve().parent.parent
PREFILL_CHUNK = 16
SENTENCES = (
    "I can put you through to the ticket office now.",
    "The museum opens at nine and closes at five today.",
    "Your table for four is booked for eight this evening.",
    "The next train to the coast leaves from platform two.",
)


def t3_part(engine: Any, tokens: int) -> dict[str, dict[str, float]]:
    """The decoder with 1 and with 4 sequences: seconds of prefill and of steps, tokens."""
    from cloud_server.tts.base import VoiceSpec
    from cloud_server.tts.chatterbox_batched import t3_inputs
    from cloud_server.tts.t3_batch import T3Batcher, T3Job
    from cloud_server.tts.t3_sequence import T3Sequence

    t3 = engine.loaded.model.t3
    inputs = [t3_inputs(engine, text, VoiceSpec()) for text in SENTENCES]
    out = {}
    for count in (1, 4):
        batcher = T3Batcher(t3, gather_seconds=0.02, max_sequences=8, autocast=contextlib.nullcontext)
        started = time.monotonic()
        jobs = [batcher.submit(T3Job(T3Sequence(t3, False, inputs[i], tokens, seed=i), lambda _t: None,
                                     lambda: None)) for i in range(count)]
        for job in jobs:
            job.wait(lambda: None, poll_seconds=1.0)
        wall = time.monotonic() - started
        batcher.close()
        s = batcher.stats
        out[str(count)] = {"tokens": s.tokens, "prefill": s.prefill_seconds, "steps": s.step_seconds,
                           "step_count": s.steps, "wall": wall, "decoded": s.tokens - count}
        _LOGGER.info("T3 x%d: %s", count, out[str(count)])
    return out


def prefill_part(engine: Any) -> dict[str, float]:
    """Four prompts (different lengths) prefilled one by one vs together in one left-padded forward."""
    import torch

    from cloud_server.tts.base import VoiceSpec
    from cloud_server.tts.chatterbox_batched import t3_inputs
    from cloud_server.tts.t3_prefill import PrefillGroup
    from cloud_server.tts.t3_sequence import T3Sequence

    t3 = engine.loaded.model.t3
    sequences = [T3Sequence(t3, False, t3_inputs(engine, text, VoiceSpec()), 1, 0) for text in SENTENCES]
    best = {"separate": float("inf"), "together": float("inf"), "shared": float("inf")}
    with torch.inference_mode():
        prompts = [s.prompt_embeds() for s in sequences]
        for _ in range(3):  # alternated, best of three: the machine is shared
            t0 = time.monotonic()
            for s in sequences:
                s.prefill()
            best["separate"] = min(best["separate"], time.monotonic() - t0)
            for name, shared in (("together", 0), ("shared", sequences[0].cond_length)):
                t0 = time.monotonic()
                group = PrefillGroup.of([None] * len(prompts), prompts, shared=shared)
                group.advance(t3.tfmr, 0)
                best[name] = min(best[name], time.monotonic() - t0)
    out = {**best, "positions": float(sum(p.size(1) for p in prompts)), "cond": float(sequences[0].cond_length)}
    _LOGGER.info("prefill x4: %s", out)
    return out


def stall_part(engine: Any, tokens: int, chunk: int) -> dict[str, float]:
    """A decodes; B (a longer prompt) arrives after A's third token: A's longest wait between two tokens."""
    from cloud_server.tts.base import VoiceSpec
    from cloud_server.tts.chatterbox_batched import t3_inputs
    from cloud_server.tts.t3_batch import T3Batcher, T3Job
    from cloud_server.tts.t3_sequence import T3Sequence

    t3 = engine.loaded.model.t3
    inputs = [t3_inputs(engine, text, VoiceSpec()) for text in SENTENCES[:2]]
    batcher = T3Batcher(t3, gather_seconds=0.02, max_sequences=8, autocast=contextlib.nullcontext,
                        prefill_chunk=chunk)
    times: dict[str, list[float]] = {"A": [], "B": []}
    jobs: list[T3Job] = []

    def submit(name: str, index: int) -> None:
        def on_token(_token: int) -> None:
            times[name].append(time.monotonic())
            if name == "A" and len(times["A"]) == 3:
                times["B submitted"] = [time.monotonic()]
                times["chunks before B"] = [float(batcher.stats.prefill_chunks)]
                submit("B", 1)

        jobs.append(batcher.submit(T3Job(T3Sequence(t3, False, inputs[index], tokens, seed=index), on_token,
                                         lambda: None)))

    submit("A", 0)
    while len(jobs) < 2 or not all(job.done.is_set() for job in jobs):
        jobs[-1].wait(lambda: None, poll_seconds=0.5)
    batcher.close()
    a = times["A"]
    gaps = sorted(b - x for x, b in zip(a, a[1:], strict=False))
    out = {"stall": gaps[-1], "step": gaps[len(gaps) // 2], "b_first": times["B"][0] - times["B submitted"][0],
           "chunks": batcher.stats.prefill_chunks - times["chunks before B"][0]}
    _LOGGER.info("stall, prefill_chunk %d: %s", chunk, out)
    return out


def s3gen_part(engine: Any, window: int) -> dict[str, float]:
    """The estimator for one caller's window (as called) and for four stacked; one whole S3Gen call."""
    import torch

    from cloud_server.tts.base import VoiceSpec

    estimator = engine.loaded.model.s3gen.flow.decoder.estimator
    seen: list[dict[str, Any]] = []
    forward = estimator.forward  # the solver calls estimator.forward(...) directly (the engine's step check)

    def spy(**kwargs: Any) -> Any:
        if not seen:
            seen.append(kwargs)
        return forward(**kwargs)

    estimator.forward = spy
    conds = engine._pristine(VoiceSpec())
    tokens = list(range(100, 100 + window))
    try:
        with torch.inference_mode():
            engine.vocode(conds, tokens)  # warm-up, and the estimator's arguments
    finally:
        estimator.forward = forward  # the engine's flow-step check, put back
    started = time.monotonic()
    with torch.inference_mode():
        engine.vocode(conds, tokens)
    whole_call = time.monotonic() - started
    kwargs = seen[0]

    stacked = {k: v.repeat(4, *([1] * (v.dim() - 1))) if torch.is_tensor(v) and v.dim() else v
               for k, v in kwargs.items()}
    one = four = float("inf")
    with torch.inference_mode():
        for _ in range(3):  # alternated, best of three: the machine is shared
            t0 = time.monotonic()
            forward(**kwargs)
            one, t0 = min(one, time.monotonic() - t0), time.monotonic()
            forward(**stacked)
            four = min(four, time.monotonic() - t0)
    x = kwargs["x"]
    result = {"rows": float(x.shape[0]), "frames": float(x.shape[-1]), "one": one, "four": four,
              "whole_call": whole_call}
    _LOGGER.info("S3Gen estimator: %s", result)
    return result


def s3gen_batched_part(engine: Any, window: int, runs: int) -> dict[str, Any]:
    """Four callers' windows through S3Gen, ``runs`` times each way, alternating: one at a time, then in one
    batch (held until all four wait, so the four really share one flow-decoder call)."""
    import torch

    from cloud_server.tts.base import VoiceSpec
    from cloud_server.tts.chatterbox_batched import vocode_window
    from cloud_server.tts.chatterbox_call import SentenceCall
    from cloud_server.tts.conditionals import clone_conditionals
    from cloud_server.tts.s3gen_hooks import batch_decode, prepare_for_concurrent_windows
    from cloud_server.tts.vocoder_batch import VocoderBatcher

    conds = engine._pristine(VoiceSpec())
    windows = [list(range(100 + 50 * i, 100 + 50 * i + window)) for i in range(4)]
    s3gen = engine.loaded.model.s3gen
    prepare_for_concurrent_windows(s3gen)

    def one(tokens: list[int]) -> None:
        call = SentenceCall(len(tokens), time.monotonic() + 3600.0, None)
        vocode_window(engine, clone_conditionals(conds), tokens, call, first=True)

    out: dict[str, Any] = {"per_caller": [], "batched": [], "solve": [], "largest": 0}
    for _ in range(runs):
        started = time.monotonic()
        with torch.inference_mode():
            for tokens in windows:
                engine.vocode(clone_conditionals(conds), tokens)
        out["per_caller"].append(time.monotonic() - started)
        batcher = VocoderBatcher(batch_decode(s3gen), gather_seconds=600.0, max_windows=4,
                                 autocast=contextlib.nullcontext)
        engine.loaded.vocoder_batcher = batcher
        started = time.monotonic()
        threads = [threading.Thread(target=one, args=(tokens,)) for tokens in windows]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=3600)
        out["batched"].append(time.monotonic() - started)
        engine.loaded.vocoder_batcher = None
        batcher.close()
        out["solve"].append(batcher.stats.solve_seconds)
        out["largest"] = max(out["largest"], batcher.stats.largest_batch)
    _LOGGER.info("S3Gen four windows: %s", out)
    return out


def s3gen_report(s3b: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """The Markdown section for S3Gen batched beside S3Gen per caller."""
    per_caller, batched = min(s3b["per_caller"]), min(s3b["batched"])
    runs = ", ".join(f"{b / p:.2f}x" for p, b in zip(s3b["per_caller"], s3b["batched"], strict=True))
    return [
        "## Chatterbox: S3Gen batched across callers vs per caller (measured here)",
        "",
        f"`python -m bench.chatterbox_batch --s3gen-only --threads {meta['threads']} --runs {meta['runs']}` on "
        f"{meta['date']}: random-weight Chatterbox (standard) on {meta['cpus']} shared CPUs (load average "
        f"{meta['load']:.1f}), torch on {meta['threads']} thread{'' if meta['threads'] == 1 else 's'}. Four callers' "
        f"{meta['window']}-token first windows with the built-in voice's prompt, through the whole S3Gen call; "
        f"fastest of {meta['runs']} alternating runs, in seconds.",
        "",
        "| S3Gen | four windows |",
        "|---|---:|",
        f"| per caller, one at a time (the default on a CPU: `vocoder_gate.py`) | {per_caller:.1f} |",
        f"| batched (`vocoder_batch`, the default on CUDA): encoder and HiFiGAN per caller, one flow-decoder call "
        f"for {s3b['largest']} windows | {batched:.1f} |",
        "",
        f"Batched / per caller: **{batched / per_caller:.2f}x** (run by run: {runs}); the batched flow-decoder "
        f"call alone took {min(s3b['solve']):.1f} s. On these cores the two ways do the same arithmetic, and "
        "batched, every caller's first audio comes only when the whole batch is done, while one at a time "
        "(first windows first) the first caller in line hears audio after one window. So on a CPU "
        "`vocoder_batch: auto` leaves it off. On a GPU a window's estimator pass leaves most of the GPU idle: "
        "see the projection for a 4090 above.",
    ]


def speak(engine: Any, text: str, barrier: threading.Barrier | None, out: list[tuple[float, float, float]]) -> None:
    """One caller's sentence: (first audio, last audio, audio seconds), counted from the common start."""
    if barrier is not None:
        barrier.wait(timeout=60)
    out.append(measure(engine, text))


def callers_part(engines: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One caller alone, then four at once, with each engine."""
    out: dict[str, dict[str, Any]] = {}
    for name, engine in engines.items():
        if engine.cfg.batch:  # the batched engine runs twice: with T3 pausing for first audio, then without
            engine.loaded.batch_decoder().first_audio_first = name == "batched"
        one: list[tuple[float, float, float]] = []
        for _ in range(2):  # the better of two: one caller's run is short, and the machine is shared
            speak(engine, SENTENCES[0], None, one)
        one.sort()
        four: list[tuple[float, float, float]] = []
        barrier = threading.Barrier(4)
        started = time.monotonic()
        threads = [threading.Thread(target=speak, args=(engine, text, barrier, four)) for text in SENTENCES]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=3600)
        wall = time.monotonic() - started
        out[name] = {"one": one[0], "four": four, "wall": wall}
        _LOGGER.info("%s: one %s; four %s in %.1f s; T3 %s", name, one[0], four, wall,
                     engine.loaded.batcher.stats if engine.cfg.batch else "-")
    return out


def report(
    t3: dict[str, Any], s3: dict[str, float], e2e: dict[str, Any], meta: dict[str, Any],
    pre: dict[str, float], stall: dict[int, dict[str, float]],
) -> list[str]:
    """The Markdown section."""
    rate = {k: v["decoded"] / v["steps"] for k, v in t3.items()}
    step_ratio = (t3["4"]["steps"] / t3["4"]["step_count"]) / (t3["1"]["steps"] / t3["1"]["step_count"])
    per_second = {name: sum(a for *_, a in r["four"]) / r["wall"] for name, r in e2e.items()}
    rate_all = {k: v["tokens"] / (v["prefill"] + v["steps"]) for k, v in t3.items()}
    lines = [
        "## Chatterbox: four callers at once, batched across callers (measured here)",
        "",
        f"`python -m bench.chatterbox_batch --tokens {meta['tokens']} --threads {meta['threads']}` on {meta['date']}: "
        f"random-weight Chatterbox (standard) on {meta['cpus']} shared CPUs (load average {meta['load']:.1f}), "
        f"torch on {meta['threads']} threads, one run each. Every sentence is exactly {meta['tokens']} speech tokens "
        f"({meta['tokens'] / 25:.1f} s of audio).",
        "",
        "**T3** (the batch decoder alone, text → speech tokens):",
        "",
        "| sequences | prefill s | decode steps | step s | decode tokens/s | tokens/s with prefill |",
        "|---:|---:|---:|---:|---:|---:|",
        *(f"| {k} | {v['prefill']:.1f} | {v['step_count']} | {v['steps']:.1f} | {rate[k]:.2f} | {rate_all[k]:.2f} |"
          for k, v in t3.items()),
        "",
        f"Four sequences decode at **{rate['4'] / rate['1']:.1f}x** the tokens per second of one (goal ≥ 3x); a "
        f"step for four costs {step_ratio:.2f}x "
        "a step for one: the weights are read once per step whatever the rows. The four prompts were prefilled "
        f"together in one forward ({t3['4']['prefill']:.1f} s, one prompt alone {t3['1']['prefill']:.1f} s); "
        f"counted in, **{rate_all['4'] / rate_all['1']:.1f}x**.",
        "",
        f"**Prefill** (the four prompts of one voice, {int(pre['positions'])} positions in all, of which "
        f"{int(pre['cond'])} each are the voice's conditioning; 2 rows each for CFG; best of three): one by one "
        f"{pre['separate']:.2f} s, together in one left-padded forward {pre['together']:.2f} s "
        f"(**{pre['separate'] / pre['together']:.2f}x** as fast), together with the voice's conditioning run once "
        f"for all rows {pre['shared']:.2f} s (**{pre['separate'] / pre['shared']:.2f}x**). Prefill is compute-bound "
        "here: batching saves the overhead of each forward, which grows with the load on the shared cores; the "
        "shared conditioning saves compute. Projected for a GPU (not measured): "
        "one prompt there is a few milliseconds of mostly weight reads and kernel launches, so four prompts in "
        "one forward cost about one prompt's time, up to ~4x for four.",
        "",
        f"**Chunked prefill** (A decodes; B's prompt arrives after A's third token; {meta['tokens']} tokens each):",
        "",
        "| `prefill_chunk` | B's prompt in | A's longest wait between two tokens | A's usual step | "
        "B's first token after arriving |",
        "|---:|---:|---:|---:|---:|",
        *(f"| {chunk} | {int(s['chunks'])} forward{'s' if s['chunks'] != 1 else ''} | {s['stall']:.2f} s "
          f"| {s['step']:.2f} s | {s['b_first']:.2f} s |" for chunk, s in stall.items()),
        "",
        f"**S3Gen** (its flow estimator, {int(s3['frames'])} mel frames: a {meta['window']}-token window with the "
        f"voice prompt): one caller's call ({int(s3['rows'])} rows) {s3['one'] * 1000:.0f} ms, four callers' stacked "
        f"{s3['four'] * 1000:.0f} ms (**{s3['four'] / s3['one']:.1f}x** for 4x the work); one whole S3Gen call "
        f"{s3['whole_call']:.1f} s. Compute-bound on this CPU: batching S3Gen would save "
        f"{max(0.0, 1 - s3['four'] / (4 * s3['one'])) * 100:.0f}% of the estimator's time here, "
        "so on a CPU the server vocodes per caller, one "
        "at a time, each sentence's first window first (vocoder_gate.py; S3Gen batched: the next section).",
        "",
        "**End to end** (the engine, streamed inside the sentence; first/last audio per caller from a common start; "
        "one caller: the better of two runs):",
        "",
        "| engine | one caller: first | last | four: slowest first | slowest last | four's audio s per s "
        "| slowest first / one |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in e2e.items():
        four = r["four"]
        slowest_first, slowest_last = max(f for f, _, _ in four), max(t for _, t, _ in four)
        lines.append(
            f"| {name} | {r['one'][0]:.1f} | {r['one'][1]:.1f} | {slowest_first:.1f} | {slowest_last:.1f} "
            f"| {per_second[name]:.3f} | **{slowest_first / r['one'][0]:.2f}x** |"
        )
    ratio = max(f for f, _, _ in e2e["batched"]["four"]) / e2e["batched"]["one"][0]
    lines += [
        "",
        "`batched` is the default on a CPU: once every running sentence has its first window's tokens, T3 "
        "pauses while a caller's first window waits for S3Gen (`tts.chatterbox.first_audio_first`); "
        "`T3 not pausing` keeps decoding beside S3Gen on the same two cores.",
        "",
        f"Aggregate audio per second, batched / serialized: "
        f"**{per_second['batched'] / per_second['serialized']:.2f}x**. "
        f"Goal for the slowest of four: ≤ 2.5x one caller on this CPU: **{'met' if ratio <= 2.5 else 'not met'}** "
        f"({ratio:.2f}x).",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Measure the three parts, write the section, log it."""
    parser = argparse.ArgumentParser(prog="python -m bench.chatterbox_batch", description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=40, help="speech tokens per sentence")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--skip-e2e", action="store_true", help="T3 and S3Gen only")
    parser.add_argument("--s3gen-only", action="store_true", help="S3Gen batched vs per caller only")
    parser.add_argument("--runs", type=int, default=2, help="alternating runs of S3Gen batched vs per caller")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/PERFORMANCE.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    _LOGGER.setLevel(logging.INFO)
    import torch

    from cloud_server.tts.chatterbox_engine import ChatterboxEngine, load_chatterbox
    from common.config import ChatterboxConfig
    from tests.chatterbox_checkpoint import ensure_checkpoint

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as conds:
        cfg = ChatterboxConfig(checkpoint=str(ensure_checkpoint("standard")), device="cpu", conditionals_dir=conds,
                               min_tokens=args.tokens, max_tokens=args.tokens, sentence_timeout_seconds=3600.0)
        loaded = load_chatterbox(cfg)
        batched = ChatterboxEngine(dataclasses.replace(cfg, batch=True), loaded)
        t3 = t3_part(batched, args.tokens)
        s3 = s3gen_part(batched, cfg.stream_first_chunk_tokens)
        pre = prefill_part(batched)
        stall = {chunk: stall_part(batched, args.tokens, chunk) for chunk in (0, PREFILL_CHUNK)}
        engines = {"batched": batched, "batched, T3 not pausing": batched,
                   "serialized": ChatterboxEngine(dataclasses.replace(cfg, batch=False), loaded)}
        e2e = {} if args.skip_e2e else callers_part(engines)
        batched.close()
    meta = {"tokens": args.tokens, "threads": args.threads, "cpus": os.cpu_count(), "load": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "window": cfg.stream_first_chunk_tokens}
    if args.skip_e2e:
        _LOGGER.info("T3 %s; S3Gen %s; prefill %s; stall %s", t3, s3, pre, stall)
        return 0
    lines = report(t3, s3, e2e, meta, pre, stall)
    if not args.no_write:
        replace_section(str(ROOT / "docs" / "PERFORMANCE.md"), "chatterbox-batch", "\n".join(lines))
    for line in lines:
        _LOGGER.info("%s", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
