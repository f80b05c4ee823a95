"""A microphone that fails mid-call: the phone keeps its head, and hanging up still works at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from common.config import config_from_dict
from pi_client.audio.offline_voice import OfflineVoice
from pi_client.audio.playback import WavFileSink
from pi_client.call.machine import State
from pi_client.call.runner import Phone
from pi_client.server.client import ServerClient
from pi_client.telephone.hook import GpioHook
from tests.helpers import mock_pins
from tests.phone_rig import until
from tests.server_rig import free_port

PIN = 17


def test_a_failing_microphone_is_retried_calmly_not_in_a_tight_loop(tmp_path: Path) -> None:
    settings = config_from_dict({"pi": {"cache_dir": str(tmp_path / "cache")}}).pi
    attempts: list[float] = []

    async def broken_listen() -> Any:
        attempts.append(asyncio.get_running_loop().time())
        raise OSError("PortAudio: device unavailable")

    async def scenario() -> None:
        sink = WavFileSink(tmp_path / "earpiece.wav")
        client = ServerClient(f"http://127.0.0.1:{free_port()}", "key", settings.client)
        phone = Phone(
            settings=settings,
            listen=broken_listen,
            transcribe=lambda pcm: "",
            client=client,
            voice=OfflineVoice(settings.offline_voice, settings.greeting, settings.cache_dir),
            sink=sink,
            monitor=None,
        )
        with mock_pins() as pins:
            running = asyncio.create_task(phone.run(GpioHook(settings.hook)))
            try:
                pins.pin(PIN).drive_low()  # lift
                await until(lambda: len(attempts) >= 1, "the first listen")
                await asyncio.sleep(3.0)
                # Each failure is followed by a pause (and a spoken prompt), never an instant retry.
                assert 1 <= len(attempts) <= 3, f"{len(attempts)} listen attempts in 3 s: the call loop spins"
                pins.pin(PIN).drive_high()  # hang up mid-pause
                await until(lambda: phone.state is State.ON_HOOK, "the hang-up", timeout=10)
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                await sink.close()
                client.close()

    asyncio.run(scenario())
