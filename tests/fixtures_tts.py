"""Fixtures for the TTS tests: the local voice, real speech clips, and ONE loaded Chatterbox per session.

Loading Chatterbox costs ~10 s and ~5 GB here, so the session holds a single model at a time; tests
that need other settings wrap it in another ``ChatterboxEngine`` (cheap) instead of loading a second
one. Tests that use Turbo are moved to the end of the session, where they swap the slot to Turbo once.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pytest

from common.config import ChatterboxConfig

if TYPE_CHECKING:
    from cloud_server.tts.chatterbox_engine import ChatterboxEngine, LoadedChatterbox

os.environ.setdefault("TQDM_DISABLE", "1")  # before chatterbox imports tqdm: no per-token progress bars

TEST_TOKENS_PER_CHAR = 0.3
TEST_MIN_TOKENS = 8
TEST_MAX_TOKENS = 12
"""Small budgets: a test sentence gets 8-12 speech tokens (~0.5 s of noise, 5-15 s to make on this CPU)."""
TORCH_THREADS = 1
"""Other engineers' tests share the two cores: one thread each, no oversubscription collapse."""


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the Turbo tests last, so the session loads each model once (standard first, then Turbo)."""
    items.sort(key=lambda item: "turbo_engine" in getattr(item, "fixturenames", ()))


class OneChatterbox:
    """At most one loaded model at a time (5-7 GB each): asking for the other kind drops the current one first."""

    def __init__(self, configs: dict[str, Callable[[], ChatterboxConfig]]) -> None:
        self._configs = configs
        self.current: LoadedChatterbox | None = None

    def get(self, kind: str) -> LoadedChatterbox:
        """The loaded model of ``kind`` (loads it, after dropping another kind, when needed)."""
        from cloud_server.tts.chatterbox_engine import load_chatterbox

        if self.current is not None and self.current.kind == kind and self.current.model is not None:
            return self.current
        self.close()
        import torch

        torch.set_num_threads(TORCH_THREADS)
        self.current = load_chatterbox(self._configs[kind]())
        return self.current

    def close(self) -> None:
        """Drop the model in memory."""
        if self.current is not None:
            self.current.model = None
            self.current = None
            gc.collect()


def _test_config(kind: Literal["standard", "turbo"], checkpoint: Path, conditionals: Path) -> ChatterboxConfig:
    return ChatterboxConfig(
        model=kind,
        checkpoint=str(checkpoint),
        device="cpu",
        conditionals_dir=str(conditionals),
        max_tokens_per_char=TEST_TOKENS_PER_CHAR,
        min_tokens=TEST_MIN_TOKENS,
        max_tokens=TEST_MAX_TOKENS,
        sentence_timeout_seconds=300.0,
        batch=False,  # the engine tests cover the one-sentence-at-a-time path; test_tts_chatterbox_batch the batch
    )


@pytest.fixture(scope="session")
def chatterbox_config(tmp_path_factory: pytest.TempPathFactory) -> ChatterboxConfig:
    """Standard Chatterbox for tests: the random-weight checkpoint, CPU, small token budgets, a temp cache."""
    from tests.chatterbox_checkpoint import ensure_checkpoint

    return _test_config("standard", ensure_checkpoint("standard"), tmp_path_factory.mktemp("conditionals"))


@pytest.fixture(scope="session")
def turbo_config(tmp_path_factory: pytest.TempPathFactory) -> ChatterboxConfig:
    """The same for Chatterbox Turbo."""
    from tests.chatterbox_checkpoint import ensure_checkpoint

    return _test_config("turbo", ensure_checkpoint("turbo"), tmp_path_factory.mktemp("conditionals-turbo"))


@pytest.fixture(scope="session")
def chatterbox_models(request: pytest.FixtureRequest) -> Iterator[OneChatterbox]:
    """The session's single model slot."""
    models = OneChatterbox(
        {
            "standard": lambda: request.getfixturevalue("chatterbox_config"),
            "turbo": lambda: request.getfixturevalue("turbo_config"),
        }
    )
    yield models
    models.close()


@pytest.fixture
def chatterbox_loaded(chatterbox_models: OneChatterbox) -> LoadedChatterbox:
    """The loaded standard model (shared by the whole session while no Turbo test runs)."""
    return chatterbox_models.get("standard")


@pytest.fixture
def chatterbox_engine(chatterbox_config: ChatterboxConfig, chatterbox_loaded: LoadedChatterbox) -> ChatterboxEngine:
    """A ChatterboxEngine on the session's standard model, with the test settings."""
    from cloud_server.tts.chatterbox_engine import ChatterboxEngine

    return ChatterboxEngine(chatterbox_config, chatterbox_loaded)


@pytest.fixture
def batched_engine(
    chatterbox_config: ChatterboxConfig, chatterbox_loaded: LoadedChatterbox
) -> Iterator[ChatterboxEngine]:
    """A ChatterboxEngine as in production (sentences of concurrent callers decode in one T3 batch)."""
    import dataclasses

    from cloud_server.tts.chatterbox_engine import ChatterboxEngine

    yield ChatterboxEngine(dataclasses.replace(chatterbox_config, batch=True), chatterbox_loaded)
    batcher, chatterbox_loaded.batcher = chatterbox_loaded.batcher, None
    if batcher is not None:
        batcher.close()


@pytest.fixture
def turbo_engine(turbo_config: ChatterboxConfig, chatterbox_models: OneChatterbox) -> ChatterboxEngine:
    """A ChatterboxEngine on Turbo (the standard model is dropped first)."""
    from cloud_server.tts.chatterbox_engine import ChatterboxEngine

    return ChatterboxEngine(turbo_config, chatterbox_models.get("turbo"))
