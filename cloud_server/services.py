"""The server's state, built once per process by ``build_services`` and reached by ``services()``.

It holds the built parts and nothing else: the LLM, the voices (wrapped once: failure watch →
phrase cache → idle unload → engine), sessions, the reply gate, the voice library and character
book, server-side Whisper and the metrics. The parts do the work.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from flask import current_app

from cloud_server.calls import CallBook
from cloud_server.console_sessions import ConsoleSessions
from cloud_server.library.character_store import CharacterStore
from cloud_server.library.characters import CharacterBook
from cloud_server.library.emotions import EmotionBook, EmotionStore
from cloud_server.library.voices import VoiceLibrary, VoiceOverrides
from cloud_server.llm.base import LLM
from cloud_server.llm.select import make_llm
from cloud_server.metrics import Metrics
from cloud_server.pipeline.admission import ReplySlots
from cloud_server.pipeline.hang_up import system_prompt
from cloud_server.pipeline.recent import RecentTurns
from cloud_server.pipeline.reply import ReplyPipeline
from cloud_server.pipeline.sessions import SessionStore
from cloud_server.storage import AudioStore, make_store
from cloud_server.stt import ServerTranscriber
from cloud_server.tts.base import TTSEngine, VoiceSpec
from cloud_server.tts.engines import descriptor
from cloud_server.tts.idle import IdleUnloadingEngine, reloader
from cloud_server.tts.phrase_cache import CachingEngine, PhraseCache
from cloud_server.tts.select import build_engines
from cloud_server.tts.watch import FailureWatch
from common.config import Config, ConfigError, ServerConfig, expand_path, resolve_api_key

_LOGGER = logging.getLogger(__name__)
EXTENSION: Final = "ai_telephone"
INSECURE_ENV: Final = "AI_TELEPHONE_INSECURE_NO_AUTH"
_HEALTH_CACHE_SECONDS: Final = 5.0
_STALE_MARGIN_SECONDS: Final = 30.0


@dataclass
class Services:
    """The per-process state behind the routes."""

    config: Config
    api_key: str | None
    llm: LLM
    primary: TTSEngine
    fallback: TTSEngine
    sessions: SessionStore
    slots: ReplySlots
    pipeline: ReplyPipeline
    library: VoiceLibrary
    characters: CharacterBook
    transcriber: ServerTranscriber
    metrics: Metrics
    console: ConsoleSessions
    """Signed-in console browsers (cloud_server/routes/console.py)."""
    recent: RecentTurns
    """The latest calls, for the console's status tab."""
    storage: AudioStore
    """Where /generate-audio keeps its files (S3, or data_dir/outputs)."""
    emotions: EmotionBook
    """Each character's emotion profiles (cloud_server/library/emotions.py)."""
    calls: CallBook
    """Calls characters place to phones (cloud_server/calls.py), kept in the data dir."""
    started: float = field(default_factory=time.monotonic)
    _llm_seen: tuple[float, bool] = (0.0, False)

    @property
    def longest_reply_seconds(self) -> float:
        """No reply may hold a slot longer than this: its cap, one stalled write, and a margin."""
        limits = self.config.server.limits
        return limits.max_reply_seconds + limits.write_timeout_seconds + _STALE_MARGIN_SECONDS

    def llm_reachable(self) -> bool:
        """Cached for a few seconds so /health stays cheap under polling."""
        checked_at, ok = self._llm_seen
        now = time.monotonic()
        if now - checked_at > _HEALTH_CACHE_SECONDS:
            try:
                ok = self.llm.is_reachable()
            except Exception:
                ok = False
            self._llm_seen = (now, ok)
        return ok


def services() -> Services:
    """The current app's Services (the one accessor every route uses)."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def api_key_or_refuse(config: Config, env: Mapping[str, str]) -> str | None:
    """The API key; refuse to start without one unless the dev flag says auth is off on purpose."""
    key = resolve_api_key(config.server.api_key_file, env)
    if key:
        return key
    if env.get(INSECURE_ENV, "") in ("1", "true", "yes"):
        _LOGGER.warning("%s is set: the API accepts requests WITHOUT a key (development only)", INSECURE_ENV)
        return None
    raise ConfigError(
        "no API key: set AI_TELEPHONE_API_KEY or server.api_key_file "
        f"(or {INSECURE_ENV}=1 for local development without auth)"
    )


def wrap_voice_model(primary: TTSEngine, server: ServerConfig) -> TTSEngine:
    """Idle unload (when configured), the phrase cache, then the failure watch, in front of the voice model."""
    if isinstance(primary, FailureWatch):
        return primary
    if server.tts.idle_unload_seconds > 0 and not isinstance(primary, IdleUnloadingEngine):
        primary = IdleUnloadingEngine(primary, reloader(primary, server.tts), server.tts.idle_unload_seconds)
    phrases = PhraseCache(expand_path(server.data_dir) / "phrases", server.phrase_cache)
    identity = descriptor(primary.name).cache_identity(server.tts)
    return FailureWatch(CachingEngine(primary, phrases, identity))


def build_services(
    config: Config,
    env: Mapping[str, str] | None = None,
    engines: tuple[TTSEngine, TTSEngine] | None = None,
) -> Services:
    """Load every model once, before the server says Ready; ``engines`` reuses already loaded voices."""
    env = os.environ if env is None else env
    api_key = api_key_or_refuse(config, env)
    server = config.server
    if server.default_character not in server.characters:
        raise ConfigError(f"server.default_character: {server.default_character!r} is not in server.characters")
    llm = make_llm(server.llm)
    primary, fallback = engines if engines is not None else build_engines(server.tts)
    primary = wrap_voice_model(primary, server)
    sessions = SessionStore(server.sessions)
    data_dir = expand_path(server.data_dir)
    # Clips must suit the configured engine (Turbo: > 5 s), even while a stand-in speaks.
    floor = descriptor(server.tts.engine).clip_longer_than(server.tts)
    library = VoiceLibrary(data_dir / "voices", server.voices, clip_longer_than=floor)
    transcriber = ServerTranscriber(server.stt)
    transcriber.load()
    metrics = Metrics()
    pipeline = ReplyPipeline(server, llm, primary, fallback, sessions)
    pipeline.listeners.append(metrics.observe_turn)
    recent = RecentTurns(server.console.recent_calls)
    pipeline.listeners.append(recent.observe)
    characters = CharacterBook(
        server, library, VoiceOverrides.in_data_dir(data_dir), CharacterStore.in_data_dir(data_dir)
    )
    services = Services(
        config=config,
        api_key=api_key,
        llm=llm,
        primary=primary,
        fallback=fallback,
        sessions=sessions,
        slots=ReplySlots(server.limits.queue_depth),
        pipeline=pipeline,
        library=library,
        characters=characters,
        transcriber=transcriber,
        metrics=metrics,
        console=ConsoleSessions(server.console.session_hours * 3600),
        recent=recent,
        storage=make_store(server.storage, data_dir),
        emotions=EmotionBook(EmotionStore.in_data_dir(data_dir), characters),
        calls=CallBook.in_data_dir(data_dir, server.calls),
    )
    prepare_voices(services)
    if server.llm.warm_up:
        # The default character last: with one Ollama slot (OLLAMA_NUM_PARALLEL=1) only the last stays cached.
        ids = sorted(characters.ids(), key=lambda cid: cid == server.default_character)
        personas = [system_prompt(characters.get(cid)[1].persona, server.hang_up) for cid in ids]
        threading.Thread(target=_warm_up, args=(llm, personas), name="llm-warm-up", daemon=True).start()
    _LOGGER.info("%d library voices, Whisper on %s", len(library.list()), transcriber.device)
    return services


def prepare_voices(svc: Services) -> None:
    """Every character's, library and emotion voice, once, so no first request pays for them.

    A disk load when their conditionals were computed before: a restart recomputes nothing.
    """
    book = svc.characters
    specs: dict[str, VoiceSpec] = {cid: book.voice_spec(cid) for cid in book.ids()}
    specs |= {v.voice_id: book.library_voice_spec(v.voice_id) for v in svc.library.list() if v.voice_id not in specs}
    specs |= {f"emotion {e.emotion_id}": svc.emotions.voice_spec(e) for e in svc.emotions.profiles()}
    for spec in specs.values():
        try:
            svc.primary.prepare_voice(spec)
        except Exception as err:
            _LOGGER.warning("Voice %s could not be prepared at start (it will be tried on use): %s", spec.voice_id, err)


def _warm_up(llm: LLM, personas: list[str]) -> None:
    """Load the model and put each character's system prompt in the LLM's cache, off the start path."""
    t0 = time.monotonic()
    try:
        warmed = llm.warm_up_prompts(personas)
        _LOGGER.info("LLM %s warmed up (%d character prompts) in %.1f s", llm.model, warmed, time.monotonic() - t0)
    except Exception as err:
        _LOGGER.warning("LLM warm-up failed (replies will apologise until it is reachable): %s", err)
