"""/health tells the truth about the voice, through every wrapper the server puts around it (issue 15)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cloud_server.tts.base import TTSEngine, TTSError, VoiceSpec
from cloud_server.tts.watch import FAILURES_BEFORE_DEGRADED
from tests.fixtures_server import TEST_KEY, server_config
from tests.ollama_standin import OllamaStandIn
from tests.test_console import sign_in

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
TIMEOUT = 30


class GpuStandIn(TTSEngine):
    """Stands in for Chatterbox loaded on a GPU: Piper's speech, reported as "cuda"; can be made to fail."""

    def __init__(self, real: TTSEngine, degraded_reason: str | None = None) -> None:
        self.real = real
        self.name = "chatterbox"
        self.sample_rate = real.sample_rate
        self.device = "cuda"
        self.degraded = degraded_reason is not None
        self.degraded_reason = degraded_reason
        self.failing = False

    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        if self.failing:
            raise TTSError("CUDA out of memory")
        yield from self.real.synthesize(text, voice, cancel)


def tts_health(url: str) -> dict[str, Any]:
    reply = requests.get(url + "/health", headers=AUTH, timeout=TIMEOUT).json()
    return reply["tts"] | {"status": reply["status"]}  # type: ignore[no-any-return]


def test_health_reports_the_gpu_through_the_phrase_cache_and_idle_unload(
    start_server: Any, tmp_path: Path, piper_engines: tuple[TTSEngine, TTSEngine]
) -> None:
    with OllamaStandIn() as ollama:
        server = start_server(
            server_config(ollama.url, tmp_path, tts={"engine": "chatterbox", "idle_unload_seconds": 600}),
            engines=(GpuStandIn(piper_engines[0]), piper_engines[1]),
        )
        tts = tts_health(server.url)
    assert (tts["engine"], tts["device"], tts["degraded"], tts["model_resident"]) == ("chatterbox", "cuda", False, True)
    assert tts["status"] == "ok"


def test_a_stand_in_stays_degraded_after_an_idle_reload(
    start_server: Any, tmp_path: Path, piper_engines: tuple[TTSEngine, TTSEngine]
) -> None:
    with OllamaStandIn() as ollama:
        ollama.script("Still here.")
        stand_in = GpuStandIn(piper_engines[0], degraded_reason="chatterbox failed to load: no CUDA")
        stand_in.name = "piper"
        config = server_config(ollama.url, tmp_path, tts={"engine": "chatterbox", "idle_unload_seconds": 0.2})
        server = start_server(config, engines=(stand_in, piper_engines[1]))
        _wait(lambda: not tts_health(server.url)["model_resident"], "the idle unload")
        unloaded = tts_health(server.url)
        reply = requests.post(server.url + "/process-text", json={"text": "Hello?"}, headers=AUTH, timeout=TIMEOUT)
        assert reply.status_code == 200 and len(reply.content) > 10000  # the reload happened
        tts = tts_health(server.url)
    assert unloaded["degraded"] and "no CUDA" in unloaded["degraded_reason"]
    assert tts["degraded"] and "no CUDA" in tts["degraded_reason"] and tts["status"] == "degraded"


def test_repeated_failures_of_the_voice_model_make_health_degraded(
    start_server: Any, tmp_path: Path, piper_engines: tuple[TTSEngine, TTSEngine]
) -> None:
    with OllamaStandIn() as ollama:
        model = GpuStandIn(piper_engines[0])
        server = start_server(server_config(ollama.url, tmp_path, tts={"engine": "chatterbox"}),
                              engines=(model, piper_engines[1]))
        model.failing = True
        for i in range(FAILURES_BEFORE_DEGRADED):
            ollama.script(f"Reply number {i} is spoken by the fallback voice.")
            reply = requests.post(server.url + "/process-text", json={"text": "Hi"}, headers=AUTH, timeout=TIMEOUT)
            assert reply.status_code == 200 and len(reply.content) > 10000  # the caller still hears speech
            if i < FAILURES_BEFORE_DEGRADED - 1:
                assert tts_health(server.url)["status"] == "ok"
        failing = tts_health(server.url)
        model.failing = False
        ollama.script("And the big voice is back.")
        requests.post(server.url + "/process-text", json={"text": "Hi"}, headers=AUTH, timeout=TIMEOUT)
        recovered = tts_health(server.url)
    assert failing["status"] == "degraded" and "CUDA out of memory" in failing["degraded_reason"]
    assert recovered["status"] == "ok" and not recovered["degraded"]


def _wait(condition: Any, what: str, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_health_and_the_status_tab_show_gpu_memory_on_cuda_and_none_on_cpu(
    start_server: Any, tmp_path: Path, piper_engines: tuple[TTSEngine, TTSEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CPU-only machine stands in for the GPU's memory calls (torch.cuda patched); the rest is the real path."""
    import torch

    gib = 1024**3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA RTX 4090")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (10 * gib, 24 * gib))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda index=None: 3 * gib)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda index=None: 4 * gib)
    with OllamaStandIn() as ollama:
        gpu_server = start_server(
            server_config(ollama.url, tmp_path / "gpu", tts={"engine": "chatterbox"}),
            engines=(GpuStandIn(piper_engines[0]), piper_engines[1]),
        )
        cpu_server = start_server(server_config(ollama.url, tmp_path / "cpu"))
        on_gpu = requests.get(gpu_server.url + "/health", headers=AUTH, timeout=TIMEOUT).json()
        on_cpu = requests.get(cpu_server.url + "/health", headers=AUTH, timeout=TIMEOUT).json()
        console, _, _ = sign_in(gpu_server.url)
        panel = console.get(gpu_server.url + "/console/status-panel", timeout=TIMEOUT)
    assert on_gpu["gpu"] == {"name": "NVIDIA RTX 4090", "total_mib": 24576, "used_mib": 14336, "free_mib": 10240,
                             "allocated_mib": 3072, "reserved_mib": 4096}
    assert "gpu" not in on_cpu  # Piper on the CPU: nothing to report
    assert panel.status_code == 200
    assert "14336 / 24576 MiB" in panel.text and "NVIDIA RTX 4090" in panel.text
