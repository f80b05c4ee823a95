"""Fixtures for the TTS tests: the local voice, real speech clips, and ONE loaded Chatterbox per session.

Loading Chatterbox costs ~10 s and ~5 GB here, so the session holds a single model; tests that need
other settings wrap it in another ``ChatterboxEngine`` (cheap) instead of loading a second one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.config import ChatterboxConfig

os.environ.setdefault("TQDM_DISABLE", "1")  # before chatterbox imports tqdm: no per-token progress bars

TEST_TOKENS_PER_CHAR = 0.5
TEST_MIN_TOKENS = 10
TEST_MAX_TOKENS = 20
"""Small budgets: a test sentence gets 10-20 speech tokens (~8 s per sentence on 2 cores)."""


@pytest.fixture(scope="session")
def local_voice():  # type: ignore[no-untyped-def]
    """The shared local voice (Piper with the packaged voice)."""
    from common.speech import open_local_voice

    return open_local_voice()


@pytest.fixture(scope="session")
def voice_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two different real voices (Piper speech at two paces and texts), as 22.05 kHz WAV files."""
    from tests.chatterbox_checkpoint import make_voice_clip

    root = tmp_path_factory.mktemp("voices")
    return {
        "alice": make_voice_clip(root / "alice.wav", "Good morning. This is Alice speaking, calling about the order.",
                                 length_scale=0.85),
        "bob": make_voice_clip(root / "bob.wav", "Hello, Bob here. I would like to hear about the weather today.",
                               length_scale=1.25),
    }


@pytest.fixture(scope="session")
def chatterbox_checkpoint() -> Path:
    """The random-weight standard checkpoint (built once, cached across sessions)."""
    from tests.chatterbox_checkpoint import ensure_checkpoint

    return ensure_checkpoint("standard")


@pytest.fixture(scope="session")
def chatterbox_config(chatterbox_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> ChatterboxConfig:
    """Chatterbox settings for tests: the local checkpoint, CPU, small token budgets, a temp cache."""
    return ChatterboxConfig(
        model="standard",
        checkpoint=str(chatterbox_checkpoint),
        device="cpu",
        conditionals_dir=str(tmp_path_factory.mktemp("conditionals")),
        max_tokens_per_char=TEST_TOKENS_PER_CHAR,
        min_tokens=TEST_MIN_TOKENS,
        max_tokens=TEST_MAX_TOKENS,
        sentence_timeout_seconds=120.0,
    )


@pytest.fixture(scope="session")
def chatterbox_loaded(chatterbox_config: ChatterboxConfig):  # type: ignore[no-untyped-def]
    """The one loaded Chatterbox model of the session."""
    from cloud_server.tts.chatterbox_engine import load_chatterbox

    loaded = load_chatterbox(chatterbox_config)
    yield loaded
    loaded.model = None


@pytest.fixture(scope="session")
def chatterbox_engine(chatterbox_config: ChatterboxConfig, chatterbox_loaded):  # type: ignore[no-untyped-def]
    """A ChatterboxEngine on the session's model, with the test settings."""
    from cloud_server.tts.chatterbox_engine import ChatterboxEngine

    return ChatterboxEngine(chatterbox_config, chatterbox_loaded)
