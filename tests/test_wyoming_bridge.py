"""The Home Assistant bridge, driven by the wyoming package's own client against a real server (Piper, Whisper)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from common.wav import float_to_pcm16
from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.helpers import words
from tests.ollama_standin import OllamaStandIn
from tests.server_rig import REPO_ROOT, free_port, self_signed_cert
from tests.server_rig import start_server as start_server_process

START_TIMEOUT = 30.0
READ_TIMEOUT = 60.0


@pytest.fixture
def voice_server(start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Path) -> RunningServer:
    return start_server(server_config(ollama.url, tmp_path))


@contextmanager
def running_bridge(server_url: str, workdir: Path, **env: str) -> Iterator[int]:
    """``python -m cloud_server.wyoming`` in its own process; yields its TCP port once it listens."""
    port = free_port()
    full_env = dict(os.environ, AI_TELEPHONE_API_KEY=TEST_KEY, **env)
    log_path = workdir / f"bridge-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_server.wyoming", "--uri", f"tcp://127.0.0.1:{port}", "--server", server_url],
        cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the bridge did not listen in time"
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
def bridge(voice_server: RunningServer, tmp_path: Path) -> Iterator[int]:
    with running_bridge(voice_server.url, tmp_path) as port:
        yield port


def describe(port: int) -> Info:
    async def run() -> Info:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Describe().event())
            return Info.from_event(await _read(client))

    return asyncio.run(run())


async def _read(client: AsyncTcpClient) -> Event:
    event = await asyncio.wait_for(client.read_event(), READ_TIMEOUT)
    assert event is not None, "the bridge closed the connection"
    return event


async def _audio(client: AsyncTcpClient, first: Event | None = None) -> tuple[AudioStart, list[AudioChunk]]:
    """Events up to audio-stop: the start and the chunks."""
    event = first or await _read(client)
    if Error.is_type(event.type):
        raise AssertionError(Error.from_event(event).text)
    assert AudioStart.is_type(event.type), event
    start, chunks = AudioStart.from_event(event), []
    while True:
        event = await _read(client)
        if AudioStop.is_type(event.type):
            return start, chunks
        assert AudioChunk.is_type(event.type), event
        chunks.append(AudioChunk.from_event(event))


def _seconds(chunks: list[AudioChunk]) -> float:
    return sum(c.seconds for c in chunks)


def test_describe_lists_the_characters_as_voices(bridge: int) -> None:
    info = describe(bridge)
    assert info.tts[0].supports_synthesize_streaming
    assert "operator" in [v.name for v in info.tts[0].voices]
    assert info.asr and info.asr[0].models[0].languages == ["en"]


def test_bridge_speaks_https_with_the_pinned_certificate(ollama: OllamaStandIn, tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    server = start_server_process(tmp_path / "server", ollama.url, tls=(cert, key), key=TEST_KEY)
    try:
        with running_bridge(server.url, tmp_path, AI_TELEPHONE_TLS_CA=str(cert)) as pinned:
            assert "operator" in [v.name for v in describe(pinned).tts[0].voices]
        with running_bridge(server.url, tmp_path) as unpinned:  # the system trust store does not know it
            assert describe(unpinned).tts[0].voices == []
    finally:
        server.stop()


def test_synthesize_streams_audio_in_several_chunks(bridge: int) -> None:
    text = "The last train leaves at nine. Please mind the gap between the train and the platform."

    async def run() -> tuple[AudioStart, list[AudioChunk]]:
        async with AsyncTcpClient("127.0.0.1", bridge) as client:
            await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name="operator")).event())
            return await _audio(client)

    start, chunks = asyncio.run(run())
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    assert len(chunks) >= 2 and _seconds(chunks) > 2.0


def test_streaming_synthesize_speaks_the_first_sentence_before_the_text_ends(bridge: int) -> None:
    async def run() -> tuple[list[AudioChunk], list[AudioChunk], bool]:
        async with AsyncTcpClient("127.0.0.1", bridge) as client:
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="operator")).event())
            for piece in ("Good evening, this is ", "the operator speaking. ", "How may I"):
                await client.write_event(SynthesizeChunk(text=piece).event())
            # Audio for the finished sentence arrives while the rest of the text is still to come.
            start, first = AudioStart.from_event(await _read(client)), AudioChunk.from_event(await _read(client))
            assert start.rate == 24000
            await client.write_event(SynthesizeChunk(text=" direct your call?").event())
            await client.write_event(SynthesizeStop().event())
            # Home Assistant also sends the whole text as a plain synthesize: ignored while streaming.
            await client.write_event(Synthesize(text="Good evening, this is the operator speaking.").event())
            rest = [first]
            while not AudioStop.is_type((event := await _read(client)).type):
                rest.append(AudioChunk.from_event(event))
            stopped = SynthesizeStopped.is_type((await _read(client)).type)
            return [first], rest, stopped

    first, everything, stopped = asyncio.run(run())
    assert stopped
    assert _seconds(everything) > _seconds(first) + 1.0  # the second sentence came after the stop


def test_transcribe_hears_piper_speech(bridge: int, spoken_text: Callable[[str], tuple[np.ndarray, int]]) -> None:
    said = "Please connect me to the station master."
    samples, rate = spoken_text(said)  # Piper without sampling noise: the same words every run
    pcm = float_to_pcm16(samples)

    async def run() -> str:
        async with AsyncTcpClient("127.0.0.1", bridge) as client:
            await client.write_event(Transcribe(language="en").event())
            await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
            step = rate * 2 // 10  # 100 ms chunks, as a microphone sends them
            for i in range(0, len(pcm), step):
                await client.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=pcm[i:i + step]).event())
            await client.write_event(AudioStop().event())
            return Transcript.from_event(await _read(client)).text

    assert words(asyncio.run(run())) == words(said)


def test_unknown_voice_is_an_error_event_and_the_bridge_goes_on(bridge: int) -> None:
    async def run() -> tuple[str, float]:
        async with AsyncTcpClient("127.0.0.1", bridge) as client:
            await client.write_event(Synthesize(text="Hello there.", voice=SynthesizeVoice(name="nobody")).event())
            error = await _read(client)
            assert Error.is_type(error.type), error
            await client.write_event(Synthesize(text="Hello there.").event())  # the default character
            _start, chunks = await _audio(client)
            return Error.from_event(error).text, _seconds(chunks)

    message, seconds = asyncio.run(run())
    assert "400" in message and seconds > 0.3
