"""Small helpers many test files share: transcript words, a test tone, bounded polling, mock GPIO pins."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from common.wav import float_to_pcm16


def words(text: str) -> list[str]:
    """Lower-case words of a transcript in order, without punctuation (for comparing what was heard)."""
    return re.findall(r"[a-z0-9']+", text.lower())


def word_set(text: str) -> set[str]:
    """The distinct words of a transcript (for "at least these words were heard")."""
    return set(words(text))


def tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.5, channels: int = 1) -> np.ndarray:
    """A sine tone as float32 samples (frames × channels when ``channels`` > 1)."""
    t = np.arange(round(seconds * rate)) / rate
    mono = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def tone_pcm16(seconds: float, rate: int, freq: float = 440.0) -> bytes:
    """A mono sine tone as PCM16 bytes."""
    return float_to_pcm16(tone(seconds, rate, freq))


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until ``condition`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def mock_pins() -> Iterator[Any]:
    """gpiozero's MockFactory as the pin factory for the duration."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    previous = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.close()
        Device.pin_factory = previous


def aplay_children() -> list[int]:
    """This process's aplay children, zombies included (an unreaped one is a leak too)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            comm, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if comm.endswith("(aplay") and int(rest.split()[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


def short_prompt(conds: Any, tokens: int = 20) -> Any:
    """A copy of Chatterbox conditionals whose S3Gen voice prompt is its first ``tokens`` speech tokens.

    S3Gen's time on a CPU grows with the prompt (every window carries it through 10 flow steps), so tests
    that vocode windows use a short one; the voice is still its own (speaker embedding, prompt mel).
    """
    import torch

    from cloud_server.tts.conditionals import clone_conditionals

    copy = clone_conditionals(conds)
    gen = copy.gen
    gen["prompt_token"] = gen["prompt_token"][:, :tokens].contiguous()
    gen["prompt_token_len"] = torch.tensor([gen["prompt_token"].shape[1]], device=gen["prompt_token"].device)
    gen["prompt_feat"] = gen["prompt_feat"][:, : 2 * tokens].contiguous()
    return copy
