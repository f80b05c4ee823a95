"""Everything a request needs, built once per process: the LLM, the voices, sessions, the gate."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud_server.errors import ApiError
from cloud_server.llm.base import LLM
from cloud_server.llm.select import make_llm
from cloud_server.pipeline.admission import ReplySlots
from cloud_server.pipeline.reply import ReplyPipeline
from cloud_server.pipeline.sessions import SessionStore
from cloud_server.tts.base import TTSEngine, VoiceSpec
from cloud_server.tts.idle import IdleUnloadingEngine, reloader
from cloud_server.tts.phrase_cache import CachingEngine, PhraseCache
from cloud_server.tts.select import build_engines
from common.config import CharacterConfig, Config, ConfigError, ServerConfig, expand_path, resolve_api_key

_LOGGER = logging.getLogger(__name__)
INSECURE_ENV = "AI_TELEPHONE_INSECURE_NO_AUTH"
_HEALTH_CACHE_SECONDS = 5.0


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
    characters: Any = None
    """The character book with runtime voice switches (cloud_server.features); None: config only."""
    started: float = field(default_factory=time.monotonic)
    _llm_seen: tuple[float, bool] = (0.0, False)

    def character(self, character_id: str | None) -> tuple[str, CharacterConfig]:
        """The named character (or the default); 404 when unknown."""
        cid = character_id or self.config.server.default_character
        found = self.config.server.characters.get(cid)
        if found is None:
            known = ", ".join(sorted(self.config.server.characters))
            raise ApiError(404, "unknown_character", f"No character named {cid!r}. Known: {known}.")
        return cid, found

    def voice_for(self, character_id: str, character: CharacterConfig) -> VoiceSpec:
        """The voice a character speaks with."""
        if self.characters is not None:
            return self.characters.voice_spec(character_id)  # type: ignore[no-any-return]
        return VoiceSpec(
            voice_id=character_id,
            clip=character.voice_clip or self.config.server.tts.chatterbox.voice_clip,
            exaggeration=character.exaggeration,
            cfg_weight=character.cfg_weight,
            temperature=character.temperature,
        )

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
    """Idle unload (when configured), then the phrase cache, in front of the voice model."""
    if isinstance(primary, CachingEngine):
        return primary
    if server.tts.idle_unload_seconds > 0 and not isinstance(primary, IdleUnloadingEngine):
        primary = IdleUnloadingEngine(primary, reloader(primary, server.tts), server.tts.idle_unload_seconds)
    phrases = PhraseCache(expand_path(server.data_dir) / "phrases", server.phrase_cache)
    model = f"{server.tts.chatterbox.model}:{server.tts.chatterbox.checkpoint}"
    return CachingEngine(primary, phrases, model=model)


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
    services = Services(
        config=config,
        api_key=api_key,
        llm=llm,
        primary=primary,
        fallback=fallback,
        sessions=sessions,
        slots=ReplySlots(server.limits.queue_depth),
        pipeline=ReplyPipeline(server, llm, primary, fallback, sessions),
    )
    for cid, character in server.characters.items():
        try:
            primary.prepare_voice(services.voice_for(cid, character))
        except Exception as err:
            _LOGGER.warning("Voice for character %s could not be prepared: %s", cid, err)
    if server.llm.warm_up:
        threading.Thread(target=_warm_up, args=(llm,), name="llm-warm-up", daemon=True).start()
    return services


def _warm_up(llm: LLM) -> None:
    t0 = time.monotonic()
    try:
        llm.warm_up()
        _LOGGER.info("LLM warmed up in %.1f s", time.monotonic() - t0)
    except Exception as err:
        _LOGGER.warning("LLM warm-up failed (replies will apologise until it is reachable): %s", err)
