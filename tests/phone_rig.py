"""The phone built in-process the way ``python -m pi_client`` builds it, plus helpers to hear what it played.

Only the hardware seams differ: the microphone is a WAV file (optionally gated, so the "caller"
speaks when the test says), the hook is gpiozero's MockFactory, the earpiece a WAV file or aplay.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import config_from_dict
from common.wav import read_wav_pcm16
from tests.fixtures_pi import PI_RATE
from tests.server_rig import ServerProcess

OFFLINE_WORDS = {"sorry", "reach", "brain", "try", "again"}
"""Words of the default offline message; Whisper must hear at least three."""
BROKEN_WORDS = {"sorry", "line", "dropped", "say", "again"}
"""Words of the default broken-line message."""


def heard(whisper: Any, path: Path) -> tuple[str, float]:
    """What Whisper hears in a WAV the earpiece got, and its length in seconds."""
    pcm, _ = read_wav_pcm16(str(path), PI_RATE)
    return whisper.transcribe(pcm), len(pcm) / 2 / PI_RATE


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie means nobody reaped it)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@dataclass
class PhoneRig:
    """A phone and what it holds, closed together."""

    phone: Any
    settings: Any
    """The PiConfig it was built with."""
    client: Any
    sink: Any
    monitor: Any
    talk: asyncio.Queue[None] | None
    """Put one item to let the caller speak once (None: the caller speaks whenever listened to)."""

    async def close(self) -> None:
        if self.monitor is not None:
            await self.monitor.close()
        await self.sink.close()
        self.client.close()


def build_phone(
    server: ServerProcess,
    question: Path,
    whisper: Any,
    tmp_path: Path,
    sink: Any,
    *,
    gated: bool = False,
    monitor: bool = False,
    pi: dict[str, Any] | None = None,
    more_servers: tuple[ServerProcess, ...] = (),
    dial: Any = None,
    touch_tones: Path | None = None,
    ring: bool = False,
) -> PhoneRig:
    """A Phone against ``server`` (then ``more_servers``, same key) hearing ``question``; call inside a running loop.

    ``dial`` is a rotary dial (GpioDial on mock pins); ``touch_tones`` a WAV the microphone
    hears while the phone waits for a number; ``ring`` adds the ringer (its bell on ``pi.ring.bell_pin``).
    """
    from pi_client.audio.capture import WavFileSource
    from pi_client.audio.offline_voice import OfflineVoice
    from pi_client.call.runner import Phone
    from pi_client.server.fleet import ServerFleet
    from pi_client.telephone.key_tap import TouchToneTap
    from pi_client.turns.endpoint import listen
    from pi_client.turns.vad import SileroVad

    settings = config_from_dict({"pi": {"cache_dir": str(tmp_path / "cache"), **(pi or {})}}).pi
    voice = OfflineVoice(settings.offline_voice, settings.greeting, settings.cache_dir)
    vad = SileroVad()
    talk: asyncio.Queue[None] | None = asyncio.Queue() if gated else None

    async def listen_once() -> Any:
        if talk is not None:
            await talk.get()
        source: Any = WavFileSource(question)
        if settings.dial.dtmf:  # as python -m pi_client: keys pressed during the call are heard too
            source = TouchToneTap(source, lambda key: phone.key_heard(key))
        try:
            return await listen(source, vad, settings.vad)
        finally:
            source.close()

    client = ServerFleet((server.url, *(s.url for s in more_servers)), server.key, settings.client)
    health = client.health if monitor else None
    ringer = None
    if ring:
        from pi_client.call.ringer import Ringer
        from pi_client.telephone.bell import Bell

        ringer = Ringer(client.clients, settings.ring, Bell(settings.ring.bell_pin, settings.ring.bell_active_high))
    phone = Phone(
        settings=settings,
        listen=listen_once,
        transcribe=whisper.transcribe,
        client=client,
        voice=voice,
        sink=sink,
        monitor=health,
        dial=dial,
        key_audio=(lambda: WavFileSource(touch_tones, realtime=True)) if touch_tones is not None else None,
        ringer=ringer,
    )
    return PhoneRig(phone, settings, client, sink, health, talk)


@contextlib.asynccontextmanager
async def phone_running(rig: PhoneRig) -> AsyncIterator[None]:
    """The rig's phone answers its GPIO hook while the block runs; then it is stopped and the rig closed."""
    from pi_client.telephone.hook import GpioHook

    running = asyncio.create_task(rig.phone.run(GpioHook(rig.settings.hook)))
    try:
        yield
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await rig.close()


async def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait (bounded) on the event loop until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)
