"""Which engines speak: the preferred one when it can run, the local voices (Piper, then espeak-ng) as fallback."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cloud_server.tts.base import TTSEngine
from cloud_server.tts.chain import FallbackChain
from cloud_server.tts.engines import ENGINES, descriptor
from common.config import TTSConfig

_LOGGER = logging.getLogger(__name__)

Loader = Callable[[TTSConfig, "int | None"], TTSEngine]


class NoVoiceError(RuntimeError):
    """No engine at all can speak: the server must not start mute."""


@dataclass(frozen=True)
class EngineChoice:
    """The engines to build, by name."""

    primary: str
    fallback: tuple[str, ...]
    """Local voices tried in order when the primary fails on a sentence."""
    degraded_reason: str | None = None
    """Why the preferred engine is not the primary; None when it is."""


def choose_engines(preferred: str, unavailable: Mapping[str, str | None]) -> EngineChoice:
    """Pick the primary and the fallback chain from why each engine cannot run (None: it can)."""
    descriptor(preferred)  # ValueError for an unknown name
    local = tuple(name for name, d in ENGINES.items() if d.local and unavailable.get(name) is None)
    if not local:
        reasons = "; ".join(str(unavailable.get(name)) for name, d in ENGINES.items() if d.local)
        raise NoVoiceError(f"no local voice: {reasons}")
    why_not = unavailable.get(preferred)
    if why_not is not None:
        return EngineChoice(local[0], _after(local[0], local), f"{preferred} unavailable: {why_not}")
    return EngineChoice(preferred, _after(preferred, local))


def _after(primary: str, local: tuple[str, ...]) -> tuple[str, ...]:
    """The local voices other than the primary; the primary itself when it is the only one."""
    return tuple(name for name in local if name != primary) or (primary,)


def detect_availability(tts_cfg: TTSConfig) -> dict[str, str | None]:
    """Why each engine cannot run here (None: it can), without importing anything heavy."""
    return {name: d.unavailable(tts_cfg) for name, d in ENGINES.items()}


def build_engines(
    tts_cfg: TTSConfig, loaders: Mapping[str, Loader] | None = None
) -> tuple[TTSEngine, TTSEngine]:
    """Build (primary, fallback chain). A primary that cannot load is replaced by a local voice, marked degraded.

    ``loaders`` overrides a descriptor's loader by engine name: the seam tests use to hand in the
    session's one loaded Chatterbox.
    """
    choice = choose_engines(tts_cfg.engine, detect_availability(tts_cfg))

    def load(name: str, rate: int | None) -> TTSEngine:
        if primary is not None and name == primary.name:
            return primary  # the only local voice is the primary itself: one copy is enough
        loader = (loaders or {}).get(name) or descriptor(name).load
        return loader(tts_cfg, rate)

    reason = choice.degraded_reason
    primary: TTSEngine | None = None
    try:
        primary = load(choice.primary, None)
    except Exception as err:  # any load failure degrades to a local voice, it does not stop the server
        _LOGGER.warning("%s could not load; a local voice speaks instead", choice.primary, exc_info=True)
        reason = f"{choice.primary} failed to load: {err}"
    rate = primary.sample_rate if primary is not None else None
    voices = _load_local(choice.fallback, load, rate)
    if primary is None:
        primary = voices[0]
        voices = voices[1:] or voices
    if reason is not None:
        primary.degraded, primary.degraded_reason = True, reason
        _LOGGER.warning("TTS degraded: %s; speaking with %s", reason, primary.name)
    fallback = FallbackChain(voices)
    _LOGGER.info("TTS: %s on %s, fallback %s", primary.name, primary.device, " → ".join(v.name for v in voices))
    return primary, fallback


def _load_local(
    names: tuple[str, ...], load: Callable[[str, int | None], TTSEngine], rate: int | None
) -> list[TTSEngine]:
    """Load each local voice that can be loaded, in order; NoVoiceError when none can."""
    voices: list[TTSEngine] = []
    failures: list[str] = []
    for name in names:
        try:
            voice = load(name, rate)
        except Exception as err:
            _LOGGER.warning("Local voice %s could not load: %s", name, err)
            failures.append(f"{name}: {err}")
            continue
        voices.append(voice)
        rate = rate or voice.sample_rate  # one stream, one rate
    if not voices:
        raise NoVoiceError("no local voice could load: " + "; ".join(failures))
    return voices
