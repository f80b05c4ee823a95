"""The fault matrix with the phone in the loop: whatever breaks, the caller hears speech, never silence.

Each case runs the real Pi client in one-turn file mode (``python -m pi_client --input-wav Q.wav
--output-wav R.wav``: Silero VAD, Whisper, the streamed request, the offline voice) against a real
server on 127.0.0.1 (the Piper voice, the Ollama stand-in), breaks one part, then checks what the
earpiece got: seconds of non-silent audio, and, by Whisper, whose words they were (the server's
reply, its spoken apology, or the phone's own offline message). Then the server must serve the next
call normally. Server-only versions of several faults live in tests/test_server_api.py, the
phone's own in tests/test_pi_call_e2e.py and tests/test_phone_live.py; docs/RELIABILITY.md maps
every fault to its tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml

from cloud_server.tts.base import TTSEngine, TTSError, VoiceSpec
from common.wav import pcm16_to_float, read_wav_pcm16, write_wav
from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.helpers import wait_for, word_set
from tests.ollama_standin import OllamaStandIn
from tests.server_rig import free_port, stop_process
from tests.tone_check import peaks_between

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000
WAIT = 120.0
QUESTION = "What is the capital of France?"
# Whisper may mishear a word or two of each message, so a message counts as heard with 3 of its words.
APOLOGY_WORDS = {"sorry", "think", "right", "now", "moment"}  # the server's: "Sorry, I can't think right now..."
OFFLINE_WORDS = {"reach", "brain", "try", "little", "while"}  # the phone's: "...reach my brain ... a little while."
BROKEN_WORDS = {"line", "dropped", "say", "that"}  # the phone's: "Sorry, the line dropped. Please say that again."


# --------------------------------------------------------------------------- helpers


def spoke(heard: set[str], message: set[str]) -> bool:
    """Whether at least three words of a known message were heard."""
    return len(heard & message) >= 3


def speech_seconds(pcm: bytes, rate: int = RATE) -> float:
    """Seconds of audio louder than near-silence, counted in 20 ms frames."""
    samples = pcm16_to_float(pcm)
    frame = rate // 50
    usable = samples[: len(samples) // frame * frame].reshape(-1, frame)
    return float((np.sqrt((usable**2).mean(axis=1)) > 0.01).sum() * 0.02)


@dataclass
class Call:
    """One finished phone turn: what the earpiece got and what the phone logged."""

    returncode: int
    stderr: str
    heard: str
    speech: float
    pcm: bytes
    whisper: Any

    @property
    def said(self) -> set[str]:
        return word_set(self.heard)

    def said_in_last(self, seconds: float) -> set[str]:
        """Words in the end of the audio only (Whisper skips repeats in long, repetitive audio)."""
        return word_set(self.whisper.transcribe(self.pcm[-int(seconds * RATE) * 2 :]))


class Phone:
    """The Pi client in one-turn file mode, as a subprocess."""

    def __init__(self, workdir: Path, question: Path, whisper: Any, **client: Any) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.question, self.whisper = workdir, question, whisper
        self.config = workdir / "pi.yaml"
        self.config.write_text(yaml.safe_dump({"pi": {"cache_dir": str(workdir / "cache"), "client": client}}))
        self.count = 0

    def start(self, url: str, key: str = TEST_KEY) -> tuple[subprocess.Popen[str], Path]:
        self.count += 1
        reply = self.workdir / f"reply-{self.count}.wav"
        env = dict(os.environ, AI_TELEPHONE_CONFIG=str(self.config), AI_TELEPHONE_API_KEY=key, TQDM_DISABLE="1")
        env.pop("AI_TELEPHONE_SERVER", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pi_client", "--server", url, "--input-wav", str(self.question),
             "--output-wav", str(reply)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        return proc, reply

    def finish(self, proc: subprocess.Popen[str], reply: Path, timeout: float = WAIT) -> Call:
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate(timeout=10)
            raise AssertionError(f"the phone hung for {timeout}s:\n{stderr[-3000:]}") from None
        assert reply.is_file(), f"the phone wrote no earpiece audio:\n{stderr[-3000:]}"
        pcm, _ = read_wav_pcm16(str(reply), RATE)
        return Call(proc.returncode, stderr, self.whisper.transcribe(pcm), speech_seconds(pcm), pcm, self.whisper)

    def call(self, url: str, key: str = TEST_KEY) -> Call:
        return self.finish(*self.start(url, key))


class ServerProcess:
    """``python -m cloud_server`` on a fixed port, so a restarted server is found where the phone looks."""

    def __init__(self, workdir: Path, ollama_url: str, port: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "server.yaml"
        config.write_text(yaml.safe_dump({"server": {
            "llm": {"backend": "ollama", "ollama_host": ollama_url, "timeout_seconds": 20.0, "warm_up": False},
            "tts": {"engine": "piper"}, "data_dir": str(workdir / "data"),
        }}))
        self.url = f"http://127.0.0.1:{port}"
        self._cmd = [sys.executable, "-m", "cloud_server", "--host", "127.0.0.1", "--port", str(port)]
        self._env = dict(os.environ, AI_TELEPHONE_CONFIG=str(config), AI_TELEPHONE_API_KEY=TEST_KEY, TQDM_DISABLE="1")
        self._env.pop("OLLAMA_HOST", None)
        self._log = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        with open(self._log, "ab") as log:
            self.proc = subprocess.Popen(self._cmd, cwd=ROOT, env=self._env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._healthy, 90, "the server to start")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"cloud_server exited {self.proc.returncode}:\n{self._log.read_text()[-3000:]}")
        try:
            return requests.get(self.url + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def assert_next_call_is_normal(phone: Phone, url: str, standin: OllamaStandIn) -> None:
    """The server answers the next call with its real reply: it is healthy again."""
    standin.script("The capital of France is Paris. ", "It is a lovely city.")
    assert requests.get(url + "/health", timeout=10).status_code == 200
    call = phone.call(url)
    assert call.returncode == 0, call.stderr[-3000:]
    assert {"paris", "lovely"} <= call.said, call.heard
    assert not call.said & (OFFLINE_WORDS | BROKEN_WORDS), call.heard


def long_reply(sentences: int = 30, pause: float = 0.3) -> list[str | float]:
    steps: list[str | float] = []
    for i in range(sentences):
        steps += [f"This is sentence number {i + 1} of a long answer about Paris. ", pause]
    return steps


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def whisper() -> Any:
    from common.config import PiSTTConfig
    from pi_client.turns.stt import WhisperTranscriber

    return WhisperTranscriber(PiSTTConfig(threads=2))


@pytest.fixture(scope="module")
def question(piper_speech: Callable[[str], bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The caller's question, spoken by Piper, with silence around it, as the microphone would hear it."""
    speech = piper_speech(QUESTION)  # 16 kHz, deterministic (no sampling noise)
    path = tmp_path_factory.mktemp("question") / "q.wav"
    write_wav(str(path), b"\0\0" * (RATE // 2) + speech + b"\0\0" * (3 * RATE // 2), RATE)
    return path


@pytest.fixture
def standin() -> Iterator[OllamaStandIn]:
    with OllamaStandIn() as s:
        yield s


@pytest.fixture
def phone(tmp_path: Path, question: Path, whisper: Any) -> Phone:
    return Phone(tmp_path / "phone", question, whisper)


# --------------------------------------------------------------------------- the matrix


def test_ollama_down_the_caller_hears_the_servers_apology_then_it_recovers(
    start_server: Callable[..., RunningServer], phone: Phone, tmp_path: Path
) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connection refused, as a stopped Ollama
    port = sock.getsockname()[1]
    server = start_server(server_config(f"http://127.0.0.1:{port}", tmp_path))
    call = phone.call(server.url)
    assert call.returncode == 0, call.stderr[-3000:]
    assert call.speech > 1.5
    assert spoke(call.said, APOLOGY_WORDS), call.heard  # the server spoke: the line is up, the LLM is not
    assert not spoke(call.said, OFFLINE_WORDS), call.heard
    sock.close()
    with OllamaStandIn(port=port) as ollama:  # Ollama comes back on its address
        assert_next_call_is_normal(phone, server.url, ollama)


def test_ollama_stalling_mid_reply_the_caller_hears_the_first_sentence_then_the_apology(
    start_server: Callable[..., RunningServer], standin: OllamaStandIn, phone: Phone, tmp_path: Path
) -> None:
    standin.script("The capital of France is Paris, a lovely city. ", end="stall")
    server = start_server(server_config(standin.url, tmp_path, llm={"timeout_seconds": 1.5}))
    call = phone.call(server.url)
    assert call.returncode == 0, call.stderr[-3000:]
    assert {"paris", "lovely"} <= call.said, call.heard
    assert spoke(call.said, APOLOGY_WORDS), call.heard
    assert call.speech > 3.0
    assert_next_call_is_normal(phone, server.url, standin)


class FailsAfterFirstSentence(TTSEngine):
    """The real Piper voice for the first sentence, then a crash, as a GPU voice model can fail mid-reply."""

    def __init__(self, real: TTSEngine) -> None:
        self.real, self.name, self.sample_rate = real, "chatterbox", real.sample_rate
        self.calls = 0
        self.failing = True
        self._lock = threading.Lock()

    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        with self._lock:
            self.calls += 1
            if self.failing and self.calls > 1:
                raise TTSError("CUDA error: an illegal memory access was encountered")
        yield from self.real.synthesize(text, voice, cancel)


def test_voice_model_failing_mid_reply_the_fallback_voice_speaks_the_rest(
    start_server: Callable[..., RunningServer], standin: OllamaStandIn, phone: Phone, tmp_path: Path,
    piper_engines: tuple[TTSEngine, TTSEngine],
) -> None:
    standin.script("The capital of France is Paris. ", "It sits on the river Seine. ", "Its museums are famous.")
    primary = FailsAfterFirstSentence(piper_engines[1])
    server = start_server(server_config(standin.url, tmp_path), engines=(primary, piper_engines[1]))
    call = phone.call(server.url)
    assert call.returncode == 0, call.stderr[-3000:]
    assert {"paris", "river", "museums"} <= call.said, call.heard  # all three sentences reached the ear
    assert not spoke(call.said, OFFLINE_WORDS) and not spoke(call.said, APOLOGY_WORDS), call.heard
    primary.failing = False
    assert_next_call_is_normal(phone, server.url, standin)


def test_server_killed_while_streaming_the_phone_plays_what_came_then_the_reorder_tone_and_recovers(
    standin: OllamaStandIn, phone: Phone, tmp_path: Path
) -> None:
    standin.script(*long_reply())
    server = ServerProcess(tmp_path / "server", standin.url, free_port()).start()
    try:
        proc, reply = phone.start(server.url)
        wait_for(lambda: bool(standin.chat_requests()) and standin.chat_requests()[-1].pieces_sent >= 4, WAIT,
                 "the reply to be streaming")
        time.sleep(1.5)  # a few sentences spoken and sent; more keep coming every 0.3 s
        server.kill()  # SIGKILL mid-stream: the GPU box dies
        call = phone.finish(proc, reply)
        assert call.returncode == 0, call.stderr[-3000:]
        assert {"sentence", "number"} <= call.said, call.heard  # what arrived was played
        assert "reply broke off" in call.stderr
        # No server answers: a dropped call, the reorder tone (not "say that again" into a dead line).
        assert "the line dropped: no server answers" in call.stderr
        assert peaks_between(call.pcm, RATE, -1.98, -1.77, 2) == pytest.approx([480.0, 620.0], abs=6.0)
        assert call.speech > 2.0
        server.start()  # restarted (systemd Restart=always) on the same address
        assert_next_call_is_normal(phone, server.url, standin)
    finally:
        server.stop()


def test_phone_dying_mid_reply_closes_the_llm_stream_and_frees_the_slot(
    start_server: Callable[..., RunningServer], standin: OllamaStandIn, phone: Phone, tmp_path: Path
) -> None:
    standin.script(*long_reply())
    server = start_server(server_config(standin.url, tmp_path))
    proc, _reply = phone.start(server.url)
    wait_for(lambda: bool(standin.chat_requests()) and standin.chat_requests()[-1].pieces_sent >= 4, WAIT,
             "the reply to be streaming")
    chat = standin.chat_requests()[-1]
    proc.kill()  # the phone loses power mid-reply: no goodbye, the socket just dies
    proc.communicate(timeout=10)
    assert chat.client_closed.wait(15), "the server kept the LLM generating for a phone that was gone"
    assert not chat.completed
    wait_for(lambda: server.services.slots.active == 0, 15, "the reply slot to be given back")
    assert_next_call_is_normal(phone, server.url, standin)


def _busy_server(
    start_server: Callable[..., RunningServer], standin: OllamaStandIn, tmp_path: Path, retry_after: int
) -> tuple[RunningServer, threading.Event, list[int], threading.Thread]:
    """A server with one reply slot, taken by another caller whose reply waits on ``gate``."""
    gate = threading.Event()
    standin.script("Please hold the line, the operator is busy. ", gate, "Thank you for waiting, the answer is Paris.")
    server = start_server(server_config(standin.url, tmp_path,
                                        limits={"queue_depth": 1, "retry_after_seconds": retry_after}))
    statuses: list[int] = []

    @server.app.after_request
    def _seen(response: Any) -> Any:
        statuses.append(response.status_code)
        return response

    first_bytes = threading.Event()

    def other_caller() -> None:
        with requests.post(server.url + "/process-text", json={"text": "I was first."}, stream=True, timeout=WAIT,
                           headers={"Authorization": f"Bearer {TEST_KEY}"}) as reply:
            for _ in reply.iter_content(chunk_size=None):
                first_bytes.set()

    occupant = threading.Thread(target=other_caller, name="other-caller", daemon=True)
    occupant.start()
    wait_for(lambda: first_bytes.is_set() and server.services.slots.active == 1, WAIT, "the other caller's reply")
    return server, gate, statuses, occupant


def test_queue_full_the_phone_waits_retry_after_and_asks_again(
    start_server: Callable[..., RunningServer], standin: OllamaStandIn, phone: Phone, tmp_path: Path
) -> None:
    server, gate, statuses, occupant = _busy_server(start_server, standin, tmp_path, retry_after=2)
    proc, reply = phone.start(server.url)
    wait_for(lambda: 503 in statuses, WAIT, "the phone to be refused with 503")
    gate.set()  # the other caller's reply ends within the Retry-After
    occupant.join(timeout=WAIT)
    call = phone.finish(proc, reply)
    assert call.returncode == 0, call.stderr[-3000:]
    assert statuses.count(503) == 1 and statuses[-1] == 200  # refused once, then served
    assert {"waiting", "paris"} <= call.said, call.heard
    assert not spoke(call.said, OFFLINE_WORDS), call.heard
    wait_for(lambda: server.services.slots.active == 0, 15, "both replies' slots to be given back")
