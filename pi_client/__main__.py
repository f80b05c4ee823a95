"""``python -m pi_client``: the phone (hook switch or keyboard), or one turn from a WAV file.

python -m pi_client                         # the handset on GPIO, config from config.yaml
python -m pi_client --keyboard              # Enter lifts / hangs up
python -m pi_client --server URL --input-wav Q.wav --output-wav R.wav   # one turn, files
python -m pi_client --input-wav Q.wav --output-wav R.wav --dial 7        # one turn with whoever 7 reaches
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.config import Config, ConfigError, load_config, replace, resolve_api_key

_LOGGER = logging.getLogger("pi_client")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pi_client", description="AI Telephone: the phone.")
    parser.add_argument("--config", default=None, help="config.yaml (default: $AI_TELEPHONE_CONFIG or ./config.yaml)")
    parser.add_argument("--server", default=None, help="server base URL (default: pi.server_url)")
    parser.add_argument("--input-wav", default=None, help="one turn: find the speech in this WAV instead of the mic")
    parser.add_argument("--output-wav", default=None, help="write what the earpiece would play to this WAV")
    parser.add_argument("--dial", default=None, help="file mode: dial this number first (pi.directory: who answers)")
    parser.add_argument("--keyboard", action="store_true", default=None, help="Enter lifts and hangs up (no GPIO)")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    return parser.parse_args(argv)


def _load(args: argparse.Namespace) -> tuple[Config, str]:
    """The validated config (with run-mode overrides applied) and the API key."""
    from pi_client.server.client import check_server_url

    cfg = load_config(args.config)
    if args.server:
        cfg = replace(cfg, pi=replace(cfg.pi, server_url=args.server, server_urls=()))
    for url in cfg.pi.servers():
        check_server_url(url)
    if args.input_wav and not args.output_wav:
        raise ConfigError("--input-wav needs --output-wav (where the reply is written)")
    if args.dial is not None and (not args.input_wav or not args.dial.isdigit()):
        raise ConfigError("--dial: expected digits, and --input-wav (file mode); live calls dial on the phone")
    from pi_client.telephone.directory import Directory, check_end_key

    Directory(cfg.pi.directory)  # ConfigError naming the bad entry, before any model loads
    from pi_client.server.ring_poll import check_ring_settings

    check_ring_settings(cfg.pi.ring)
    check_end_key(cfg.pi.dial.end_call_key)
    key = resolve_api_key(cfg.pi.api_key_file)
    if not key:
        raise ConfigError("AI_TELEPHONE_API_KEY: not set (nor pi.api_key_file); the server refuses calls without it")
    return cfg, key


@dataclass
class _Stages:
    """What a run needs, built once at start-up."""

    phone: Any
    client: Any
    sink: Any
    monitor: Any


async def _build(args: argparse.Namespace, cfg: Config, key: str) -> _Stages:
    """Load the models and open what the phone needs; startup failures become one ConfigError line."""
    from pi_client.audio.offline_voice import OfflineVoice
    from pi_client.audio.playback import AplaySink, AudioSink, WavFileSink
    from pi_client.call.runner import Phone
    from pi_client.server.fleet import ServerFleet
    from pi_client.turns.endpoint import listen
    from pi_client.turns.smart_turn import TurnDetectorError, load_turn_detector
    from pi_client.turns.speculative import SpeculativeTranscriber
    from pi_client.turns.stt import TranscriberError, WhisperTranscriber
    from pi_client.turns.vad import SileroVad, VadError

    pi = cfg.pi
    voice = OfflineVoice(pi.offline_voice, pi.greeting, pi.cache_dir)
    await asyncio.to_thread(voice.prepare)  # greeting and apologies ready before the first call
    try:
        vad = SileroVad()
        turn_detector = await asyncio.to_thread(load_turn_detector, pi.turns.smart_turn)
        transcribe = None
        speculator = None
        if not pi.stt.use_server:
            transcribe = (await asyncio.to_thread(WhisperTranscriber, pi.stt)).transcribe
            if pi.stt.speculative:
                speculator = SpeculativeTranscriber(transcribe)
                transcribe = speculator.transcribe
    except (TranscriberError, VadError, TurnDetectorError) as err:
        raise ConfigError(str(err)) from err

    def make_source() -> Any:
        if args.input_wav:
            from pi_client.audio.capture import WavFileSource

            return WavFileSource(args.input_wav)
        from pi_client.audio.capture import SoundDeviceSource

        return SoundDeviceSource(pi.audio)

    async def listen_once() -> Any:
        source = make_source()
        if pi.dial.dtmf:  # keys pressed during the call: a digit switches character, * ends the call
            from pi_client.telephone.key_tap import TouchToneTap

            source = TouchToneTap(source, lambda key: phone.key_heard(key))
        try:
            return await listen(source, vad, pi.vad, turn_detector, pi.turns.smart_turn, speculator)
        finally:
            source.close()

    sink: AudioSink = WavFileSink(args.output_wav) if args.output_wav else AplaySink(pi.audio.output_device)
    if pi.audio.telephone_band:
        from pi_client.audio.telephone_band import TelephoneBandSink

        sink = TelephoneBandSink(sink)  # 300-3400 Hz: tones, greetings, replies, the phone's own voice
    client = ServerFleet(pi.servers(), key, pi.client)
    monitor = None if args.input_wav else client.health
    phone = Phone(
        settings=pi,
        listen=listen_once,
        transcribe=transcribe,
        client=client,
        voice=voice,
        sink=sink,
        monitor=monitor,
        dial=None if args.input_wav else _make_dial(cfg),
        key_audio=make_source,
        ringer=None if args.input_wav else _make_ringer(cfg, client, keyboard=bool(args.keyboard)),
    )
    return _Stages(phone, client, sink, monitor)


async def _main(args: argparse.Namespace, cfg: Config, key: str) -> int:
    # systemd stops the phone with SIGTERM: cancel like a hang-up, so aplay and the request are closed.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    stages = await _build(args, cfg, key)
    try:
        if args.input_wav:
            _LOGGER.info("Ready (one turn from %s, server %s)", args.input_wav, stages.client.base_url)
            if args.dial is not None and not await stages.phone.dial(args.dial):
                return 1
            if await stages.phone.run_one_turn() is None:
                _LOGGER.error("no speech found in %s", args.input_wav)
                return 1
            return 0
        hook = _make_hook(cfg, keyboard=bool(args.keyboard))
        stages.monitor.start()
        _LOGGER.info(
            "Ready: server %s, hook %s, STT %s",
            stages.client.base_url,
            "keyboard" if args.keyboard or cfg.pi.hook.mode == "keyboard" else f"GPIO{cfg.pi.hook.pin}",
            "server" if cfg.pi.stt.use_server else "local",
        )
        await stages.phone.run(hook)
        return 0
    except asyncio.CancelledError:
        _LOGGER.info("Stopping")
        return 0
    finally:
        if stages.monitor is not None:
            await stages.monitor.close()
        await stages.sink.close()
        stages.client.close()


def _make_dial(cfg: Config) -> Any:
    if not cfg.pi.dial.rotary.enabled:
        return None
    from pi_client.telephone.rotary import DialError, GpioDial

    try:
        return GpioDial(cfg.pi.dial.rotary)
    except DialError as err:  # it names pi.dial.rotary.pin
        raise ConfigError(str(err)) from err


def _make_ringer(cfg: Config, client: Any, keyboard: bool) -> Any:
    """The ringer for calls the server places; the bell only where the hook is on GPIO too (not at a desk)."""
    ring = cfg.pi.ring
    if not ring.enabled:
        return None
    from pi_client.call.ringer import Ringer
    from pi_client.telephone.bell import Bell, BellError

    gpio = not keyboard and cfg.pi.hook.mode == "gpio"
    try:
        bell = Bell(ring.bell_pin if gpio else None, ring.bell_active_high)
    except BellError as err:  # it names pi.ring.bell_pin
        raise ConfigError(str(err)) from err
    return Ringer(client.clients, ring, bell)


def _make_hook(cfg: Config, keyboard: bool) -> Any:
    from pi_client.telephone.hook import GpioHook, HookError, KeyboardHook

    if keyboard or cfg.pi.hook.mode == "keyboard":
        return KeyboardHook()
    try:
        return GpioHook(cfg.pi.hook)
    except HookError as err:  # it names pi.hook.pin
        raise ConfigError(str(err)) from err


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, load config, configure logging, run; exit 1 with one line when a setting is bad."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg, key = _load(args)
    except ConfigError as err:
        _LOGGER.error("%s", err)
        return 1
    try:
        return asyncio.run(_main(args, cfg, key))
    except (KeyboardInterrupt, asyncio.CancelledError):  # stopped while starting up
        return 0
    except ConfigError as err:
        _LOGGER.error("%s", err)
        return 1


def run() -> None:
    """Console entry point."""
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())


if __name__ == "__main__":
    run()
