"""The phone's HTTP client against a real ``cloud_server``: streaming, typed errors, one connection, TLS pinning."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from common.config import ClientConfig, ConfigError
from pi_client.server.client import (
    Busy,
    ReplyRequest,
    ServerClient,
    ServerRejected,
    ServerUnavailable,
    StreamBroken,
)
from pi_client.server.health import HealthMonitor, next_check_delay
from pi_client.server.reply_pump import RateWatch, ReplyAudio, ReplyEnd, ReplyHead, ReplyPump
from tests.rogue_server import RATE as ROGUE_RATE
from tests.rogue_server import RogueServer
from tests.server_rig import ServerProcess, free_port, self_signed_cert, start_server

CFG = ClientConfig(connect_timeout_seconds=2.0, read_timeout_seconds=10.0)


def read_all(client: ServerClient, text: str, **kwargs: Any) -> tuple[Any, bytes]:
    """One whole streamed reply: the stream (for its headers) and all its PCM."""
    with client.open_reply(text, **kwargs) as stream:
        pcm = b"".join(stream.audio(threading.Event()))
    return stream, pcm


def test_a_reply_streams_as_pcm_and_its_text_is_in_the_session(call_server: ServerProcess, call_standin: Any) -> None:
    call_standin.script("Good morning to you, caller. ", "The weather is fine today.")
    client = ServerClient(call_server.url, call_server.key, CFG)
    try:
        stream, pcm = read_all(client, "Good morning")
        assert stream.session_id and stream.sample_rate == 22050
        assert len(pcm) % 2 == 0 and len(pcm) / 2 / 22050 > 2.0  # two sentences of speech
        assert client.reply_text(stream.session_id) == "Good morning to you, caller. The weather is fine today."
        # The next turn continues the conversation: the LLM sees the first exchange.
        read_all(client, "And tomorrow?", session_id=stream.session_id)
        messages = call_standin.chat_requests()[-1].messages
        assert [m["content"] for m in messages if m["role"] == "user"][-2:] == ["Good morning", "And tomorrow?"]
        # Health, two replies and the session lookup all went over one kept-alive connection.
        client.health()
        pools = client._session.get_adapter(call_server.url).poolmanager.pools
        keys = pools.keys()  # this container refuses plain iteration
        assert sum(pools[key].num_connections for key in keys) == 1
    finally:
        client.close()


def test_refusals_are_typed_with_the_servers_message(call_server: ServerProcess) -> None:
    client = ServerClient(call_server.url, call_server.key, CFG)
    wrong_key = ServerClient(call_server.url, "not-the-key", CFG)
    try:
        with pytest.raises(ServerRejected) as err:
            wrong_key.open_reply("hello")
        assert err.value.status == 401 and err.value.message
        with pytest.raises(ServerRejected) as err:
            client.open_reply("hello", character="nobody-by-this-name")
        assert err.value.status == 404
        with pytest.raises(ServerRejected) as err:
            client.open_reply("x" * 5000)
        assert err.value.status == 413
        with pytest.raises(ServerRejected) as err:
            client.open_reply("   ")
        assert err.value.status == 400
        assert client.health()["status"] in ("ok", "degraded")  # and the server is still fine
    finally:
        client.close()
        wrong_key.close()


def test_nobody_listening_is_server_unavailable_quickly() -> None:
    client = ServerClient(f"http://127.0.0.1:{free_port()}", "k", CFG)
    started = time.monotonic()
    with pytest.raises(ServerUnavailable):
        client.open_reply("hello")
    with pytest.raises(ServerUnavailable):
        client.health()
    assert client.reply_text("abc") is None
    assert time.monotonic() - started < 2 * CFG.connect_timeout_seconds


def test_a_bad_server_url_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="pi.server_url"):
        ServerClient("ftp://example", "k", CFG)
    with pytest.raises(ConfigError, match="pi.client.ca_cert"):
        ServerClient("https://127.0.0.1:1", "k", ClientConfig(ca_cert="/nonexistent/ca.pem"))


def test_a_full_queue_is_busy_with_retry_after(call_standin: Any, tmp_path: Path) -> None:
    server = start_server(tmp_path, call_standin.url, {"limits": {"queue_depth": 1, "retry_after_seconds": 7}})
    client = ServerClient(server.url, server.key, CFG)
    try:
        call_standin.script("Hold the line please, I am thinking. ", 30.0, "Done.")
        with client.open_reply("first caller"):
            with pytest.raises(Busy) as err:
                client.open_reply("second caller")
            assert err.value.retry_after == 7.0
    finally:
        client.close()
        server.stop()


def test_stopping_the_pump_closes_the_connection_mid_reply(call_server: ServerProcess, call_standin: Any) -> None:
    steps: list[str | float] = []
    for i in range(20):
        steps += [f"This is sentence number {i + 1} of a very long answer. ", 0.5]
    call_standin.script(*steps)
    client = ServerClient(call_server.url, call_server.key, CFG)

    async def scenario() -> list[Any]:
        pump = ReplyPump(client, ReplyRequest(text="tell me everything"))
        pieces = [await pump.next(30.0)]
        while sum(isinstance(p, ReplyAudio) for p in pieces) < 2:
            pieces.append(await pump.next(30.0))
        pump.stop()
        assert await asyncio.to_thread(pump.done.wait, 5.0), "the reader thread did not stop"
        return pieces

    try:
        pieces = asyncio.run(scenario())
        assert isinstance(pieces[0], ReplyHead) and pieces[0].session_id
        assert not any(isinstance(p, ReplyEnd) for p in pieces)
        chat = call_standin.chat_requests()[-1]
        assert chat.client_closed.wait(timeout=15), "the server never saw the phone go"
        assert chat.pieces_sent < 20
    finally:
        client.close()


def test_tls_with_the_pinned_certificate(call_standin: Any, tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    server = start_server(tmp_path / "tls", call_standin.url, tls=(cert, key))
    pinned = ServerClient(server.url, server.key, ClientConfig(ca_cert=str(cert)))
    unpinned = ServerClient(server.url, server.key, CFG)
    try:
        assert server.url.startswith("https://")
        call_standin.script("Secure line established, go ahead. ")
        _, pcm = read_all(pinned, "hello over TLS")
        assert len(pcm) > 22050  # more than half a second of speech
        with pytest.raises(ServerUnavailable, match="(?i)certificate"):
            unpinned.health()  # a server the pin does not vouch for is not the phone's server
    finally:
        pinned.close()
        unpinned.close()
        server.stop()


def test_backoff_doubles_while_down_up_to_the_cap() -> None:
    delays = [next_check_delay(False, n, interval=15.0, backoff_max=10.0) for n in range(1, 7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert next_check_delay(True, 0, interval=15.0, backoff_max=10.0) == 15.0


def test_the_monitor_notices_the_server_go_and_come_back(call_standin: Any, tmp_path: Path) -> None:
    port = free_port()
    first = start_server(tmp_path / "a", call_standin.url, port=port)
    cfg = ClientConfig(connect_timeout_seconds=1.0, health_interval_seconds=0.3, health_backoff_max_seconds=0.5)
    client = ServerClient(first.url, first.key, cfg)
    second: ServerProcess | None = None

    async def until(monitor: HealthMonitor, up: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while monitor.up is not up:
            assert time.monotonic() < deadline, f"monitor never saw up={up}"
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        nonlocal second
        monitor = HealthMonitor(client.health, cfg)
        monitor.start()
        try:
            await until(monitor, True, 10)
            first.kill()
            await until(monitor, False, 10)
            second = await asyncio.to_thread(
                start_server, tmp_path / "b", call_standin.url, None, port, None, first.key
            )
            await until(monitor, True, 10)  # back by itself, nobody poked it
        finally:
            await monitor.close()

    try:
        asyncio.run(scenario())
    finally:
        client.close()
        first.stop()
        if second is not None:
            second.stop()


def test_stop_wakes_a_read_blocked_on_a_silent_server(call_server: ServerProcess, call_standin: Any) -> None:
    # The LLM pauses after one sentence: the reader thread sits in recv() with a minute of read timeout left.
    call_standin.script("Here is one sentence for you. ", 60.0, "And the rest.")
    client = ServerClient(call_server.url, call_server.key, ClientConfig(read_timeout_seconds=60.0))

    async def scenario() -> bool:
        pump = ReplyPump(client, ReplyRequest(text="hello"))
        while not isinstance(await pump.next(30.0), ReplyAudio):
            pass
        with contextlib.suppress(TimeoutError):
            await pump.next(1.0)  # let the reader block on the silent socket
        pump.stop()
        return await asyncio.to_thread(pump.done.wait, 5.0)

    try:
        assert asyncio.run(scenario()), "the reader stayed blocked after stop()"
    finally:
        client.close()


# --------------------------------------------------------------------------- a server that misbehaves


def test_an_endless_fast_reply_waits_for_the_player_instead_of_filling_memory() -> None:
    cfg = ClientConfig(reply_buffer_seconds=2.0, max_reply_seconds=3600.0)
    bound = int(cfg.reply_buffer_seconds * ROGUE_RATE) * 2 + 8192  # the buffer, plus one network read

    async def scenario(server: RogueServer, client: ServerClient) -> None:
        pump = ReplyPump(client, ReplyRequest(text="talk for ever"))
        assert isinstance(await pump.next(10.0), ReplyHead)
        assert isinstance(await pump.next(10.0), ReplyAudio)
        await asyncio.sleep(2.0)  # the player is busy: nothing is taken meanwhile, the server keeps pushing
        assert pump.peak_queued_bytes <= bound
        # What the server got through is the buffer plus the kernel's socket buffers, not gigabytes.
        assert server.sent < 32_000_000, f"{server.sent} bytes read while the player took nothing"
        taken = 0
        while taken < 20 * bound:  # now the player catches up: the reader resumes, still within the bound
            piece = await pump.next(10.0)
            assert isinstance(piece, ReplyAudio)
            taken += len(piece.pcm)
        assert pump.peak_queued_bytes <= bound
        pump.stop()
        assert await asyncio.to_thread(pump.done.wait, 5.0), "the reader did not stop"

    with RogueServer("endless") as server:
        client = ServerClient(server.url, server.key, cfg)
        try:
            asyncio.run(scenario(server, client))
        finally:
            client.close()
        assert server.hung_up.wait(10), "the server never saw the phone go"


def test_a_reply_longer_than_max_reply_seconds_is_cut_there() -> None:
    cfg = ClientConfig(max_reply_seconds=3.0)
    with RogueServer("endless") as server:
        client = ServerClient(server.url, server.key, cfg)
        got = 0
        try:
            with client.open_reply("talk for ever") as stream, pytest.raises(StreamBroken, match="longer than 3s"):
                for pcm in stream.audio(threading.Event()):
                    got += len(pcm)
                    assert got <= 3 * ROGUE_RATE * 2, "read past the cap"
        finally:
            client.close()
        assert got == 3 * ROGUE_RATE * 2  # exactly three seconds reached the player
        assert server.hung_up.wait(10), "the phone kept the endless reply open"


def test_a_trickling_reply_is_dropped_after_one_window() -> None:
    # 2 bytes every 50 ms after the first second: never silent long enough for the read timeout.
    cfg = ClientConfig(read_timeout_seconds=1.0, min_bytes_per_second=2000.0)

    async def scenario(client: ServerClient) -> int:
        pump = ReplyPump(client, ReplyRequest(text="hello"))
        pieces = 0
        try:
            with pytest.raises(StreamBroken, match="trickled"):
                while pieces < 1000:  # bounded: about 50 s of trickle
                    await pump.next(5.0)
                    pieces += 1
        finally:
            pump.stop()
        return pieces

    with RogueServer("trickle") as server:
        client = ServerClient(server.url, server.key, cfg)
        try:
            pieces = asyncio.run(scenario(client))
        finally:
            client.close()
        assert pieces < 100  # about one window of 1 s, not the whole trickle
        assert server.hung_up.wait(10)


def test_the_rate_watch_tells_a_pause_between_sentences_from_a_trickle() -> None:
    watch = RateWatch(min_bytes_per_second=2000.0, window_seconds=10.0)
    # A sentence (3 s at 22 kHz) at once, a 9 s pause for the LLM, the next sentence: a real reply.
    assert not any(watch.too_slow(t, 16384) for t in (0.0, 0.0, 0.1, 0.1, 0.2))
    assert not any(watch.too_slow(t, 16384) for t in (9.2, 9.3, 9.3, 18.0, 18.1, 27.5))
    trickle = RateWatch(min_bytes_per_second=2000.0, window_seconds=10.0)
    verdicts = [trickle.too_slow(t * 0.05, 2) for t in range(210)]
    assert verdicts.index(True) == 200  # 10 s after the first audio, not before


@pytest.mark.parametrize("mode", ["rate0", "stereo"])
def test_a_reply_header_the_phone_cannot_play_is_refused(mode: str) -> None:
    with RogueServer(mode) as server:  # type: ignore[arg-type]
        client = ServerClient(server.url, server.key, CFG)
        try:
            with client.open_reply("hello") as stream, pytest.raises(ServerUnavailable, match="not a playable"):
                list(stream.audio(threading.Event()))
        finally:
            client.close()
