"""Chatterbox voice conditionals: computed on upload, loaded after a restart, redone when the clip changes.

Runs the real Chatterbox (random-weight checkpoint, the session's one loaded model) behind the
real HTTP routes. A "restart" is a new app with a new engine object on the same loaded model: its
in-memory cache is empty, so only the disk cache can spare the recomputation.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import soundfile as sf

from common.config import ChatterboxConfig
from tests.fixtures_server import TEST_KEY, server_config
from tests.ollama_standin import OllamaStandIn

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
TIMEOUT = 300
Speech = Callable[[str], tuple[np.ndarray, int]]


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def computed(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Computed voice conditionals")]


def loaded(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Loaded voice conditionals")]


def test_conditionals_precomputed_on_upload_and_kept_across_restart(
    chatterbox_config: ChatterboxConfig,
    chatterbox_loaded: Any,
    piper_engines: Any,
    start_server: Any,
    tmp_path: Path,
    spoken_text: Speech,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cloud_server.tts.chatterbox_engine import ChatterboxEngine

    caplog.set_level(logging.INFO, logger="cloud_server.tts.conditionals")
    cb = dataclasses.replace(chatterbox_config, conditionals_dir=str(tmp_path / "conds"))
    with OllamaStandIn() as ollama:
        config = server_config(ollama.url, tmp_path, tts={"engine": "chatterbox", "chatterbox": dataclasses.asdict(cb)})
        first = start_server(config, engines=(ChatterboxEngine(cb, chatterbox_loaded), piper_engines[1]))
        caplog.clear()
        clip = wav_bytes(*spoken_text("Ahoy there. This is the captain speaking, from the deck of my ship."))
        created = requests.post(
            first.url + "/voices",
            files={"audio": ("c.wav", clip, "audio/wav")},
            data={"id": "captain"},
            headers=AUTH,
            timeout=TIMEOUT,
        )
        assert created.status_code == 201, created.text
        assert len(computed(caplog)) == 1 and "captain.wav" in computed(caplog)[0]  # precomputed on upload
        on_disk = sorted(p.name for p in (tmp_path / "conds").glob("*.pt"))
        assert on_disk
        switched = requests.post(
            first.url + "/characters/operator/voice", json={"voice": "captain"}, headers=AUTH, timeout=TIMEOUT
        )
        assert switched.status_code == 200
        assert len(computed(caplog)) == 1  # same clip and exaggeration: nothing new to compute

        caplog.clear()
        restarted = start_server(config, engines=(ChatterboxEngine(cb, chatterbox_loaded), piper_engines[1]))
        assert any(name in m for m in loaded(caplog) for name in on_disk)  # read back from disk at start
        assert computed(caplog) == []
        reply = requests.post(
            restarted.url + "/v1/audio/speech",
            json={
                "model": "chatterbox",
                "voice": "operator",
                "input": "Welcome aboard, sailor.",
                "response_format": "wav",
            },
            headers=AUTH,
            timeout=TIMEOUT,
        )
        assert reply.status_code == 200, reply.text
        samples, rate = sf.read(io.BytesIO(reply.content))
        assert rate == 24000 and samples.size > 0
        assert computed(caplog) == []  # the first request after the restart did not recompute
        assert restarted.services.primary.engine.name == "chatterbox"

        # A new recording under the same name is a new voice: computed once more, old file kept apart.
        other = wav_bytes(*spoken_text("A different recording. The captain has a cold today, and sounds hoarse."))
        replaced = requests.post(
            restarted.url + "/voices",
            files={"audio": ("c.wav", other, "audio/wav")},
            data={"id": "captain"},
            headers=AUTH,
            timeout=TIMEOUT,
        )
        assert replaced.status_code == 200 and replaced.json()["changed"] is True
        assert len(computed(caplog)) == 1
        assert len(list((tmp_path / "conds").glob("*.pt"))) == len(on_disk) + 1
