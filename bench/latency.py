"""Voice-to-voice latency of one phone turn, streamed (this project) against sequential (the seed's design).

Run: ``python -m bench.latency [--runs N] [--quick]``. Real parts only: a question spoken by Piper,
the Pi's ``listen()`` (Silero VAD endpointing over a WAV file) and Whisper (packaged tiny.en), then
``/process-text`` on a real server on 127.0.0.1 with the LLM as the Ollama stand-in at realistic
token timing or as the real SmolLM2-135M served over the Ollama protocol, and TTS by Piper or by
Chatterbox on its random-weight checkpoint (token-capped; loaded once). The same turn then goes
through ``/bench/sequential`` (whole reply, then all speech, then send). Medians go to
docs/PERFORMANCE.md with docs/latency.png; the last line printed is the ratio of times to first
audio, sequential / streamed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.rig import QUESTION

_LOGGER = logging.getLogger("bench.latency")
KEY = "bench-key-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent
STAGES = ("endpoint", "stt", "request", "llm_first_token", "first_sentence", "first_synth", "first_audio", "whole")
HEADLINE = ("chatterbox", "standin")
"""The setup whose ratio is the last line: the product's voice model with GPU-like LLM timing."""


@dataclass(frozen=True)
class Setup:
    """Which voice and which LLM a server runs."""

    tts: str
    llm: str

    @property
    def label(self) -> str:
        return f"{self.tts} + {'stand-in LLM' if self.llm == 'standin' else 'SmolLM2'}"


@dataclass
class TurnTiming:
    """One measured turn; Pi-side stages in seconds, server stages in seconds after the request was sent."""

    setup: str
    design: str
    run: int
    endpoint: float
    """End-of-turn delay as the phone decides it by default (Smart Turn after a short silence)."""
    stt: float
    request: float
    llm_first_token: float
    first_sentence: float
    first_synth: float
    first_audio: float
    whole: float
    llm_done: float
    synth_done: float
    first_synth_seconds: float
    """Time the TTS took for the first sentence."""
    first_chunk_audio: float
    """Seconds of speech in the first sentence."""
    reply_audio: float
    sentences: int
    pieces_to_first_sentence: int
    pieces: int
    reply_text: str
    endpoint_silence: float = 0.0
    """The same utterance's end-of-turn delay with the fixed silence rule alone (the phone before Smart Turn)."""
    stt_server: float = 0.0
    """The server's Whisper (/process-audio) on the same utterance, on this machine."""
    utterance_seconds: float = 0.0
    """Length of the utterance the phone cut (what /process-audio would upload)."""
    utterance_silence_seconds: float = 0.0
    """Length of the utterance the silence rule alone cut: longer when Smart Turn ended the turn early."""

    @property
    def voice_to_first_audio(self) -> float:
        """End of the caller's speech to the first reply audio at the Pi."""
        return self.endpoint + self.stt + self.first_audio


@dataclass(frozen=True)
class Heard:
    """The Pi side of one turn: end-of-turn delays, Whisper's time on the Pi and on the server, the text."""

    endpoint: float
    stt: float
    text: str
    endpoint_silence: float
    stt_server: float
    utterance_seconds: float
    utterance_silence_seconds: float


def _question_wav(path: Path) -> float:
    """Write the spoken question (Piper, 16 kHz, silence around it); return its speech length."""
    from common.speech import open_local_voice
    from common.wav import resample_pcm16, write_wav
    from pi_client.audio.capture import SAMPLE_RATE

    voice = open_local_voice()
    speech = resample_pcm16(b"".join(voice.synthesize(QUESTION)), voice.sample_rate, SAMPLE_RATE)
    write_wav(str(path), b"\0\0" * SAMPLE_RATE + speech + b"\0\0" * (2 * SAMPLE_RATE), SAMPLE_RATE)
    return len(speech) / 2 / SAMPLE_RATE


class Bench:
    """Everything loaded once: Pi side, voices, LLM stand-ins, one server per setup."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        from bench.rig import PacedLLM, RecordingLLM
        from cloud_server.llm.embedded import EmbeddedLLM
        from cloud_server.stt import ServerTranscriber
        from cloud_server.tts.select import build_engines
        from common.config import LLMConfig, PiSTTConfig, ServerSTTConfig, SmartTurnConfig, TTSConfig
        from pi_client.turns.smart_turn import load_turn_detector
        from pi_client.turns.stt import WhisperTranscriber
        from pi_client.turns.vad import SileroVad
        from tests.ollama_standin import OllamaStandIn

        self.args = args
        self.question = tmp / "question.wav"
        self.question_seconds = _question_wav(self.question)
        self.vad = SileroVad()
        self.stt = WhisperTranscriber(PiSTTConfig(threads=2))
        self.turn_cfg = SmartTurnConfig()
        self.detector = load_turn_detector(self.turn_cfg)
        if self.detector is None:
            raise RuntimeError("Smart Turn did not load: the phone's default end of turn cannot be measured")
        self.server_stt = ServerTranscriber(ServerSTTConfig())
        self.server_stt.load()
        piper, piper_fallback = build_engines(TTSConfig(engine="piper"))
        self.engines: dict[str, Any] = {"piper": (piper, piper_fallback)}
        if not args.no_chatterbox:
            self.engines["chatterbox"] = self._chatterbox(tmp, piper)
        smollm2 = EmbeddedLLM(LLMConfig(backend="embedded", max_tokens=args.smollm2_tokens, temperature=0.0))
        smollm2.warm_up()
        self.llms = {"standin": RecordingLLM(PacedLLM()), "smollm2": RecordingLLM(smollm2)}
        self.standins = {name: OllamaStandIn(backend=llm).start() for name, llm in self.llms.items()}
        self.servers: dict[Setup, Any] = {}
        self.timed: dict[Setup, Any] = {}
        for tts in self.engines:
            for llm in self.llms:
                self._serve(Setup(tts, llm), tmp)

    def _chatterbox(self, tmp: Path, piper: Any) -> tuple[Any, Any]:
        """Chatterbox on the random-weight checkpoint, with Piper (resampled to its rate) as its fallback."""
        from cloud_server.tts.chatterbox_engine import ChatterboxEngine, load_chatterbox
        from cloud_server.tts.piper_engine import LocalVoiceEngine
        from common.config import ChatterboxConfig
        from tests.chatterbox_checkpoint import ensure_checkpoint

        cfg = ChatterboxConfig(
            model="standard", checkpoint=str(ensure_checkpoint("standard")), device="cpu",
            conditionals_dir=str(tmp / "conditionals"), max_tokens_per_char=0.5,
            min_tokens=self.args.chatterbox_tokens // 2, max_tokens=self.args.chatterbox_tokens,
            sentence_timeout_seconds=300.0,
        )
        t0 = time.monotonic()
        engine = ChatterboxEngine(cfg, load_chatterbox(cfg))
        _LOGGER.info("Chatterbox (random weights, %d speech tokens max per sentence) loaded in %.1f s",
                     self.args.chatterbox_tokens, time.monotonic() - t0)
        return engine, LocalVoiceEngine(piper.voice, sample_rate=engine.sample_rate)

    def _serve(self, setup: Setup, tmp: Path) -> None:
        from bench.rig import TimedTTS
        from bench.sequential import add_sequential_route
        from cloud_server import create_app
        from common.config import config_from_dict
        from tests.fixtures_server import serve_app

        primary, fallback = self.engines[setup.tts]
        timed = TimedTTS(primary)
        cfg = config_from_dict({"server": {
            "llm": {"backend": "ollama", "ollama_host": self.standins[setup.llm].url, "timeout_seconds": 300.0,
                    "warm_up": False},
            "tts": {"engine": setup.tts},
            # Every run repeats the same reply; a real reply rarely does: each sentence is synthesized afresh.
            "phrase_cache": {"enabled": False},
            "data_dir": str(tmp / f"data-{setup.tts}-{setup.llm}"),
        }})
        app = create_app(cfg, env={"AI_TELEPHONE_API_KEY": KEY}, engines=(timed, fallback))
        add_sequential_route(app)
        self.servers[setup] = serve_app(app)
        self.timed[setup] = timed

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()
        for standin in self.standins.values():
            standin.stop()

    def hear_question(self) -> Heard:
        """The Pi side: end of turn over the recording (Smart Turn, and the silence rule alone), then Whisper."""
        import numpy as np

        from common.config import VADConfig
        from pi_client.audio.capture import WavFileSource
        from pi_client.turns.endpoint import listen

        silence = asyncio.run(listen(WavFileSource(self.question), self.vad, VADConfig()))
        smart = asyncio.run(
            listen(WavFileSource(self.question), self.vad, VADConfig(), self.detector, self.turn_cfg)
        )
        if silence is None or smart is None:
            raise RuntimeError("the VAD found no speech in the spoken question")
        t0 = time.monotonic()
        text = self.stt.transcribe(smart.pcm)
        stt = time.monotonic() - t0
        t0 = time.monotonic()
        self.server_stt.transcribe(np.frombuffer(smart.pcm, dtype=np.int16).astype(np.float32) / 32768.0)
        return Heard(smart.endpoint_delay_seconds, stt, text, silence.endpoint_delay_seconds,
                     time.monotonic() - t0, len(smart.pcm) / 2 / 16000, len(silence.pcm) / 2 / 16000)

    def turn(self, setup: Setup, design: str, run: int, heard: Heard) -> TurnTiming:
        """One turn against the setup's server, timed at the caller, the LLM and the TTS seam."""
        import requests

        from bench.rig import ask
        from bench.sequential import SEQUENTIAL_PATH
        from common.config import SentenceConfig

        server = self.servers[setup]
        path = "/process-text" if design == "streamed" else SEQUENTIAL_PATH
        with requests.Session() as session:
            reply = ask(session, server.url + path, KEY, {"text": heard.text})
        if reply.status != 200 or reply.first_audio_at is None or reply.error:
            raise RuntimeError(f"{setup.label} {design}: status {reply.status}, {reply.error}")
        calls = self.llms[setup.llm].calls_since(reply.sent)
        synths = [c for c in self.timed[setup].calls_since(reply.sent) if c.first_chunk is not None]
        if not calls or not calls[0].pieces or not synths:
            raise RuntimeError(f"{setup.label} {design}: the LLM or the voice was never used")
        call, first = calls[0], synths[0]
        first_at = call.first_sentence_at(SentenceConfig()) or call.pieces[-1][0]
        t0 = reply.sent
        rate = self.timed[setup].sample_rate
        return TurnTiming(
            setup=setup.label, design=design, run=run, endpoint=heard.endpoint, stt=heard.stt,
            endpoint_silence=heard.endpoint_silence, stt_server=heard.stt_server,
            utterance_seconds=heard.utterance_seconds, utterance_silence_seconds=heard.utterance_silence_seconds,
            request=reply.headers_at - t0,
            llm_first_token=call.pieces[0][0] - t0,
            first_sentence=first_at - t0,
            first_synth=(first.first_chunk or first.started) - t0,
            first_audio=reply.first_audio_at - t0,
            whole=(reply.done_at or reply.headers_at) - t0,
            llm_done=(call.ended or call.pieces[-1][0]) - t0,
            synth_done=max(c.ended or c.started for c in synths) - t0,
            first_synth_seconds=(first.first_chunk or first.started) - first.started,
            first_chunk_audio=first.audio_bytes / 2 / rate,
            reply_audio=reply.audio_seconds,
            sentences=len(synths),
            pieces_to_first_sentence=sum(1 for at, _ in call.pieces if at <= first_at),
            pieces=len(call.pieces),
            reply_text=call.text.strip(),
        )


def median_table(results: list[TurnTiming]) -> dict[tuple[str, str], dict[str, float]]:
    """Median of every numeric field per (setup, design)."""
    groups: dict[tuple[str, str], list[TurnTiming]] = {}
    for r in results:
        groups.setdefault((r.setup, r.design), []).append(r)
    table = {}
    for key, rows in groups.items():
        fields = {name: statistics.median(getattr(r, name) for r in rows) for name in _NUMERIC}
        fields["voice_to_first_audio"] = statistics.median(r.voice_to_first_audio for r in rows)
        fields["n"] = len(rows)
        table[key] = fields
    return table


_NUMERIC = [name for name, tp in TurnTiming.__annotations__.items() if tp in ("float", "int") and name != "run"]


def run(args: argparse.Namespace) -> list[TurnTiming]:
    """All setups, both designs, ``args.runs`` times (Chatterbox ``args.chatterbox_runs`` times)."""
    results: list[TurnTiming] = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            setups = list(bench.servers)
            # One unmeasured turn per setup: first-call costs (allocations, caches) are not a phone turn's.
            heard = bench.hear_question()
            _LOGGER.info("Caller said %.1f s of speech; Whisper heard %r", bench.question_seconds, heard.text)
            for setup in setups:
                bench.turn(setup, "streamed", -1, heard)
            for i in range(args.runs):
                heard = bench.hear_question()
                designs = ("streamed", "sequential") if i % 2 == 0 else ("sequential", "streamed")
                for setup in setups:
                    if setup.tts == "chatterbox" and i >= args.chatterbox_runs:
                        continue
                    for design in designs:
                        timing = bench.turn(setup, design, i, heard)
                        results.append(timing)
                        _LOGGER.info("run %d %-28s %-10s first audio %.2f s, whole %.2f s", i, setup.label, design,
                                     timing.first_audio, timing.whole)
        finally:
            bench.close()
    return results


def main(argv: list[str] | None = None) -> int:
    """Measure, write docs/PERFORMANCE.md + docs/latency.png, print the ratio last."""
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured turns per setup and design")
    parser.add_argument("--chatterbox-runs", type=int, default=3, help="of those, how many with Chatterbox")
    parser.add_argument("--quick", action="store_true", help="one run, smaller budgets (a smoke test)")
    parser.add_argument("--no-chatterbox", action="store_true", help="Piper only (no torch)")
    parser.add_argument("--chatterbox-tokens", type=int, default=20, help="speech tokens per sentence at most")
    parser.add_argument("--smollm2-tokens", type=int, default=48, help="SmolLM2 reply length cap")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/")
    parser.add_argument("--from-json", default=None, help="re-render docs/ from a saved docs/latency.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.chatterbox_runs, args.chatterbox_tokens, args.smollm2_tokens = 1, 1, 10, 32
    args.chatterbox_runs = min(args.chatterbox_runs, args.runs)
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access line per turn would drown the results
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    _LOGGER.addHandler(out)
    _LOGGER.setLevel(logging.INFO)
    _LOGGER.propagate = False

    if args.from_json:
        with open(args.from_json, encoding="utf-8") as fh:
            saved = json.load(fh)
        results = [TurnTiming(**turn) for turn in saved["turns"]]
        return _finish(results, saved["meta"], args)
    started = time.monotonic()
    results = run(args)
    meta = {
        "runs": args.runs, "chatterbox_runs": args.chatterbox_runs, "chatterbox_tokens": args.chatterbox_tokens,
        "smollm2_tokens": args.smollm2_tokens, "cpus": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(), "load_average": os.getloadavg(),
        "seconds": round(time.monotonic() - started, 1), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    return _finish(results, meta, args)


def _finish(results: list[TurnTiming], meta: dict[str, Any], args: argparse.Namespace) -> int:
    """Print the stage table, write docs/ (unless told not to), print the ratios, the headline last."""
    from bench.latency_report import ratio_lines, stage_table, write_report

    table = median_table(results)
    for line in stage_table(table):
        _LOGGER.info("%s", line)
    if not args.no_write:
        (ROOT / "docs").mkdir(exist_ok=True)
        if not args.from_json:
            with open(ROOT / "docs" / "latency.json", "w", encoding="utf-8") as fh:
                json.dump({"meta": meta, "turns": [asdict(r) for r in results]}, fh, indent=1)
        write_report(table, results, meta, ROOT / "docs")
        _LOGGER.info("Wrote docs/PERFORMANCE.md and docs/latency.png (%.0f s in all)", meta["seconds"])
    lines = ratio_lines(table, HEADLINE)
    for line in lines:
        _LOGGER.info("%s", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
