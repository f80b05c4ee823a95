"""``python -m pi_client``: the phone (hook switch or keyboard), or one turn from a WAV file.

python -m pi_client                         # the handset on GPIO, config from config.yaml
python -m pi_client --keyboard              # Enter lifts / hangs up
python -m pi_client --server URL --input-wav Q.wav --output-wav R.wav   # one turn, files
python -m pi_client --input-wav Q.wav --output-wav R.wav --dial 7        # one turn with whoever 7 reaches
python -m pi_client --input-wav CALL.wav --output-wav EAR.wav --whole-call [--echo-db -10]   # a whole call
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
_SPECULATOR_STOP_SECONDS = 10.0
"""Bound on waiting for a speculative Whisper run in hand when the phone stops, in seconds."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pi_client", description="AI Telephone: the phone.")
    parser.add_argument("--config", default=None, help="config.yaml (default: $AI_TELEPHONE_CONFIG or ./config.yaml)")
    parser.add_argument("--server", default=None, help="server base URL (default: pi.server_url)")
    parser.add_argument("--input-wav", default=None, help="one turn: find the speech in this WAV instead of the mic")
    parser.add_argument("--output-wav", default=None, help="write what the earpiece would play to this WAV")
    parser.add_argument("--dial", default=None, help="file mode: dial this number first (pi.directory: who answers)")
    parser.add_argument(
        "--whole-call",
        action="store_true",
        help="the input WAV is the live microphone of a whole call (every utterance a turn, barge-in, touch tones);"
        " the output WAV is the earpiece on the call's clock",
    )
    parser.add_argument(
        "--echo-db", type=float, default=None, help="whole call: the earpiece leaks into the mic at this level (-10)"
    )
    parser.add_argument("--clock-speed", type=float, default=None, help=argparse.SUPPRESS)  # tests: a faster clock
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
    if args.whole_call and not args.input_wav:
        raise ConfigError("--whole-call needs --input-wav (the call's microphone) and --output-wav (its earpiece)")
    if (args.echo_db is not None or args.clock_speed is not None) and not args.whole_call:
        raise ConfigError("--echo-db: only with --whole-call")
    if args.whole_call and args.dial is not None:
        raise ConfigError("--dial: not with --whole-call (the recording dials with touch tones)")
    if args.clock_speed is not None and not 0.1 <= args.clock_speed <= 10:
        raise ConfigError("--clock-speed: expected 0.1-10")
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
    line: Any = None
    """Whole-call mode: the recorded line (the call's clock) and its shared microphone."""
    microphone: Any = None
    speculator: Any = None
    """Speculative Whisper's worker, stopped before the process exits."""


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

    line = microphone = None
    sink: AudioSink
    if args.whole_call:
        from pi_client.audio.recorded_call import LineEarpiece
        from pi_client.call.whole_call import recorded_call

        line, microphone = recorded_call(args.input_wav, args.echo_db, args.clock_speed or 1.0, pi.turns.echo)
        sink = LineEarpiece(line)
    elif args.output_wav:
        sink = WavFileSink(args.output_wav)
    else:
        aplay = AplaySink(pi.audio.output_device)
        from pi_client.audio.microphone import live_microphone

        microphone = live_microphone(pi.audio, pi.turns.echo, aplay)
        sink = aplay

    def make_source() -> Any:
        if microphone is not None:
            return microphone.tap()
        from pi_client.audio.capture import WavFileSource

        return WavFileSource(args.input_wav)

    async def listen_once(on_frame: Any = None) -> Any:
        source = make_source()
        if pi.dial.dtmf:  # keys pressed during the call: a digit switches character, * ends the call
            from pi_client.telephone.key_tap import TouchToneTap

            source = TouchToneTap(source, lambda key: phone.key_heard(key))
        try:
            return await listen(
                source,
                vad,
                pi.vad,
                turn_detector,
                pi.turns.smart_turn,
                speculator=speculator,
                speculate_after_seconds=pi.stt.speculate_after_silence_seconds,
                on_frame=on_frame,
                on_voice=phone.caller_voice,  # a reply's first audio waits while the caller is heard
            )
        finally:
            source.close()

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
        overhear=listen_once if microphone is not None else None,
        microphone=microphone if line is None else None,  # a recorded call's clock stops with its own hook
        ringer=None if args.input_wav else _make_ringer(cfg, client, keyboard=bool(args.keyboard)),
    )
    return _Stages(phone, client, sink, monitor, line, microphone, speculator)


async def _main(args: argparse.Namespace, cfg: Config, key: str) -> int:
    # systemd stops the phone with SIGTERM: cancel like a hang-up, so aplay and the request are closed.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    stages = await _build(args, cfg, key)
    try:
        if stages.line is not None:
            from pi_client.call.whole_call import run_whole_call

            _LOGGER.info("Ready (a whole call from %s, server %s)", args.input_wav, stages.client.base_url)
            await run_whole_call(stages.phone, stages.line, stages.microphone, args.output_wav)
            return 0
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
        if stages.microphone is not None:
            await stages.microphone.close()
        await stages.sink.close()
        stages.client.close()
        if stages.speculator is not None:
            await asyncio.to_thread(stages.speculator.join, _SPECULATOR_STOP_SECONDS)


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
