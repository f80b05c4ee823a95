"""The reply pipeline: LLM text → sentences → speech, streamed as one WAV while the LLM still writes.

The LLM runs in its own thread and feeds a bounded queue of sentences; the request thread
synthesizes sentence N while the LLM writes sentence N+1. The LLM's pieces are read on a thread of
their own (pieces.py), so a finished sentence followed by a pause in the LLM goes to the voice after
``sentences.end_grace_seconds`` instead of waiting for the next token. A failure degrades the turn instead of
ending it: the LLM failing → the character's spoken apology; the voice model failing → the
fallback voice speaks the rest. Hang-up (the WSGI server closing the response) sets ``cancel``,
which stops the LLM stream and pending synthesis. Each reply keeps a timeline of which sentence its
audio was saying when (pipeline/heard.py): a reply cut short is recorded as far as it went out, and
as far as the caller heard once the phone says so (``SessionStore.clip_reply``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field

from cloud_server.llm.base import LLM, LLMError
from cloud_server.llm.context import fit_context
from cloud_server.pipeline.hang_up import HangUpFilter, system_prompt
from cloud_server.pipeline.heard import ReplyTimeline
from cloud_server.pipeline.pieces import paced
from cloud_server.pipeline.sentences import SentenceSplitter
from cloud_server.pipeline.sessions import SessionStore
from cloud_server.tts.base import TTSEngine, VoiceSpec
from common.config import CharacterConfig, ServerConfig
from common.priority_gate import as_reply_speech
from common.wav import SAMPLE_WIDTH, resample_pcm16, wav_header

_LOGGER = logging.getLogger(__name__)
_POLL_SECONDS = 0.1
_SENTENCES_AHEAD = 16


@dataclass(frozen=True)
class Turn:
    """One thing the caller said, and to whom."""

    text: str
    session_id: str
    character_id: str
    character: CharacterConfig
    voice: VoiceSpec
    prompt: str | None = None
    transcript: str | None = None
    """The STT result when the turn came in as audio."""
    history: tuple[dict[str, str], ...] | None = None
    """The conversation the client keeps and sent; None: the server's own session history is used."""


@dataclass
class TurnStats:
    """What happened in one turn, for the log line and the metrics."""

    reply_text: str = ""
    llm_first_token_seconds: float | None = None
    llm_seconds: float | None = None
    first_audio_seconds: float | None = None
    total_seconds: float = 0.0
    audio_seconds: float = 0.0
    sentence_seconds: list[float] = field(default_factory=list)
    first_synth_seconds: float | None = None
    """The voice's own time to the first PCM of the reply's first sentence (what the server adds is the rest)."""
    fallback_sentences: int = 0
    llm_failed: bool = False
    cancelled: bool = False
    engine: str = ""
    character_id: str = ""
    heard: str = ""
    """What the caller said (the turn's text), for listeners that show calls."""
    hung_up: bool = False
    """The character ended the call in this reply (``server.hang_up.marker``)."""


@dataclass(frozen=True)
class _LLMFailed:
    reason: str


_END = object()


class ReplyPipeline:
    """Turns a Turn into a streamed WAV (header first, then PCM16 as each sentence is spoken)."""

    def __init__(
        self,
        cfg: ServerConfig,
        llm: LLM,
        primary: TTSEngine,
        fallback: TTSEngine,
        sessions: SessionStore,
    ) -> None:
        self._cfg = cfg
        self._llm = llm
        self.primary = primary
        self.fallback = fallback
        self._sessions = sessions
        self.listeners: list[Callable[[TurnStats], None]] = []
        """Called with the stats of every finished turn (metrics hook in here)."""

    @property
    def sample_rate(self) -> int:
        """Every stream is at the primary engine's rate; fallback audio is resampled to it."""
        return self.primary.sample_rate

    def messages(self, turn: Turn) -> list[dict[str, str]]:
        """System persona (+ the caller's extra prompt), the session history, then the new text.

        ``prompt`` is a trusted-client field (whoever holds the API key: the Pi, an app): it is
        added below the persona, never instead of it, and bounded by ``server.limits.max_prompt_chars``.
        The oldest history is dropped when the whole would not fit the LLM's context with its reply.
        A client that keeps its own conversation (``turn.history``) is answered from it, so any
        server can answer any of its turns.
        """
        system = system_prompt(turn.character.persona, self._cfg.hang_up)
        if turn.prompt:
            system = f"{system}\n\n{turn.prompt}"
        if turn.history is not None:
            history = [dict(m) for m in turn.history]
        else:
            history = self._sessions.history(turn.session_id, turn.character_id)
        return fit_context(
            [{"role": "system", "content": system}, *history, {"role": "user", "content": turn.text}], self._llm
        )

    def speak(self, turn: Turn, cancel: threading.Event) -> Iterator[bytes]:
        """The whole streamed reply: a WAV header for an open-ended stream, then PCM16 chunks."""
        stats = TurnStats(engine=self.primary.name, character_id=turn.character_id, heard=turn.text)
        started = time.monotonic()
        yield wav_header(self.sample_rate)
        timeline = self._sessions.start_reply(turn.session_id, cancel)  # before the history is read
        pending: queue.Queue[object] = queue.Queue(maxsize=_SENTENCES_AHEAD)
        parts: list[str] = []
        producer = threading.Thread(
            target=self._produce,
            args=(self.messages(turn), pending, cancel, parts, stats, started),
            name="llm-reply",
            daemon=True,
        )
        producer.start()
        use_fallback = False
        deadline = started + self._cfg.limits.max_reply_seconds
        try:
            while not cancel.is_set():
                if time.monotonic() > deadline:
                    _LOGGER.warning("Reply cut at the %.0f s cap", self._cfg.limits.max_reply_seconds)
                    break
                try:
                    item = pending.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                if item is _END:
                    timeline.finished = True
                    break
                if isinstance(item, _LLMFailed):
                    stats.llm_failed = True
                    _LOGGER.warning("LLM failed (%s): speaking the apology", item.reason)
                    item = turn.character.apology
                text = str(item)
                timeline.sentence(text)
                # Until its first audio the caller hears silence: that sentence goes before other replies' later ones.
                spoken = as_reply_speech(
                    self._speak_sentence(text, turn.voice, cancel, use_fallback, stats),
                    since=started, first=stats.first_audio_seconds is None,
                )
                with closing(spoken):
                    for pcm, via_fallback in spoken:
                        use_fallback = use_fallback or via_fallback
                        if stats.first_audio_seconds is None:
                            stats.first_audio_seconds = time.monotonic() - started
                        seconds = len(pcm) / SAMPLE_WIDTH / self.sample_rate
                        stats.audio_seconds += seconds
                        timeline.audio(seconds)
                        yield pcm
                        if time.monotonic() > deadline:  # checked per chunk: a slow reader cannot stretch it
                            break
                    else:
                        if not cancel.is_set():
                            timeline.sentence_done()
                if stats.llm_failed:
                    break
        except GeneratorExit:
            stats.cancelled = True
            raise
        finally:
            cancel.set()
            producer.join(timeout=5.0)
            stats.reply_text = "".join(parts).strip()
            stats.total_seconds = time.monotonic() - started
            try:
                self._finish(turn, stats, timeline)
            finally:
                timeline.closed.set()

    def speak_sentences(
        self, text: str, voice: VoiceSpec, cancel: threading.Event, stats: TurnStats | None = None
    ) -> Iterator[bytes]:
        """Speak a given text without the LLM (the OpenAI speech route): one PCM16 block per sentence.

        Same splitter and same fallback as a reply, the same ``max_reply_seconds`` cap; audio is at
        ``self.sample_rate``.
        """
        stats = stats if stats is not None else TurnStats(engine=self.primary.name)
        splitter = SentenceSplitter(self._cfg.sentences)
        use_fallback = heard_any = False
        started = time.monotonic()
        deadline = started + self._cfg.limits.max_reply_seconds
        for sentence in [*splitter.push(text), *splitter.flush()]:
            if time.monotonic() > deadline:
                _LOGGER.warning("Speech cut at the %.0f s cap", self._cfg.limits.max_reply_seconds)
                return
            parts: list[bytes] = []
            spoken = self._speak_sentence(sentence, voice, cancel, use_fallback, stats)
            for pcm, via_fallback in as_reply_speech(spoken, since=started, first=not heard_any):
                use_fallback = use_fallback or via_fallback
                parts.append(pcm)
            if cancel.is_set():
                return
            block = b"".join(parts)
            heard_any = heard_any or bool(block)
            stats.audio_seconds += len(block) / SAMPLE_WIDTH / self.sample_rate
            yield block

    def _produce(
        self,
        messages: list[dict[str, str]],
        out: queue.Queue[object],
        cancel: threading.Event,
        parts: list[str],
        stats: TurnStats,
        started: float,
    ) -> None:
        """LLM thread: stream tokens, cut sentences, hand them over; never blocks past a cancel."""

        def put(item: object) -> bool:
            while not cancel.is_set():
                try:
                    out.put(item, timeout=_POLL_SECONDS)
                    return True
                except queue.Full:
                    continue
            return False

        splitter = SentenceSplitter(self._cfg.sentences)
        hang_up = HangUpFilter(self._cfg.hang_up.marker)
        grace = self._cfg.sentences.end_grace_seconds
        last_piece_at, told_idle = time.monotonic(), True

        def quiet_after() -> float | None:
            # Once per pause: a held "3." is not re-examined every grace period until the LLM goes on.
            return grace if splitter.holding and not told_idle else None

        try:
            for piece in paced(self._llm.stream_reply(messages, cancel), cancel, quiet_after):
                if cancel.is_set():
                    return
                if piece is None:
                    told_idle = True
                    ready = splitter.idle(time.monotonic() - last_piece_at)
                else:
                    last_piece_at, told_idle = time.monotonic(), False
                    if stats.llm_first_token_seconds is None:
                        stats.llm_first_token_seconds = last_piece_at - started
                    text = hang_up.push(piece)
                    parts.append(text)
                    ready = splitter.push(text)
                for sentence in ready:
                    if not put(sentence):
                        return
                if hang_up.found:
                    stats.hung_up = True  # nothing after the marker is spoken: stop reading the LLM
                    break
            tail = hang_up.flush()
            parts.append(tail)
            for sentence in [*splitter.push(tail), *splitter.flush()]:
                if not put(sentence):
                    return
            stats.llm_seconds = time.monotonic() - started
            put(_END)
        except LLMError as err:
            put(_LLMFailed(str(err)))
        except Exception as err:  # a bug or an unexpected client error: the caller still hears an apology
            _LOGGER.exception("LLM stream crashed")
            put(_LLMFailed(type(err).__name__))

    def _speak_sentence(
        self, text: str, voice: VoiceSpec, cancel: threading.Event, use_fallback: bool, stats: TurnStats
    ) -> Generator[tuple[bytes, bool], None, None]:
        """Speak one sentence with the primary engine, or with the fallback once the primary failed.

        A voice that streams inside the sentence can fail after some of it was heard: the fallback
        then says the whole sentence again, so no words are lost.
        """
        t0 = time.monotonic()
        if not use_fallback:
            try:
                for pcm in self.primary.synthesize(text, voice, cancel):
                    if stats.first_synth_seconds is None:
                        stats.first_synth_seconds = time.monotonic() - t0
                    yield pcm, False
                stats.sentence_seconds.append(time.monotonic() - t0)
                return
            except Exception as err:  # TTSError or a library crash: the fallback voice takes over
                _LOGGER.warning("%s failed on a sentence (%s): fallback voice takes over", self.primary.name, err)
        if cancel.is_set():
            return
        stats.fallback_sentences += 1
        try:
            for pcm in self.fallback.synthesize(text, voice, cancel):
                if stats.first_synth_seconds is None:
                    stats.first_synth_seconds = time.monotonic() - t0
                yield resample_pcm16(pcm, self.fallback.sample_rate, self.sample_rate), True
        except Exception:
            _LOGGER.exception("Fallback voice failed too; sentence skipped")
        stats.sentence_seconds.append(time.monotonic() - t0)

    def _finish(self, turn: Turn, stats: TurnStats, timeline: ReplyTimeline) -> None:
        with timeline.lock:  # a heard report arriving now waits, then clips what is recorded here
            reply = timeline.kept_text(stats.reply_text)
            if timeline.withdrawn:
                pass  # the caller heard none of it and went on: the next turn brings the words again
            elif (reply or stats.hung_up) and not stats.llm_failed:
                self._sessions.record(
                    turn.session_id,
                    turn.character_id,
                    turn.text,
                    reply,
                    turn.transcript,
                    turn.history,
                    ended=stats.hung_up,
                )
                timeline.recorded = reply
            elif stats.llm_failed and not stats.cancelled:
                self._sessions.drop_oldest_turn(turn.session_id, turn.character_id)
        _LOGGER.info(
            "Turn session=%s character=%s llm_first=%s first_audio=%s first_synth=%s total=%.2fs audio=%.2fs "
            "fallback_sentences=%d llm_failed=%s cancelled=%s hung_up=%s",
            turn.session_id,
            turn.character_id,
            _fmt(stats.llm_first_token_seconds),
            _fmt(stats.first_audio_seconds),
            _fmt(stats.first_synth_seconds, 3),
            stats.total_seconds,
            stats.audio_seconds,
            stats.fallback_sentences,
            stats.llm_failed,
            stats.cancelled,
            stats.hung_up,
        )
        for listener in self.listeners:
            try:
                listener(stats)
            except Exception:
                _LOGGER.exception("Turn listener failed")


def _fmt(seconds: float | None, digits: int = 2) -> str:
    return "-" if seconds is None else f"{seconds:.{digits}f}s"
