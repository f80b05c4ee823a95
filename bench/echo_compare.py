"""Echo cancellers compared on the handset leak of ``--echo-db``: what reaches the VAD, and what Whisper hears.

Run: ``python -m bench.echo_compare [--db -10]``. A Piper reply plays; the microphone hears it
through :class:`~pi_client.audio.echo.HandsetLeak`, and the caller says "Wait, what about Italy?"
over it at several offsets (the reply stops 0.6 s after the caller starts, as a barge-in does).
For each canceller: echo-only residual (dB below the leak), Silero frames taken for speech on
echo alone (a false barge-in needs 0.4 s in a row), the caller's level kept during double talk,
what Whisper makes of the interruption, and CPU per second of audio. Candidates: WebRTC AEC3 through
``pywebrtc-audio`` (the phone's), through ``livekit``'s AudioProcessingModule when importable, and
SpeexDSP's MDF canceller through the system ``libspeexdsp`` (ctypes) when present.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pi_client.audio.echo import EchoCanceller, HandsetLeak

RATE = 16000
FRAME = 512
REPLY = "The capital of France is Paris. It is a lovely city to visit in the spring, with parks and cafes by the river."
INTERRUPTION = "Wait, what about Italy?"
Canceller = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(mic frame, earpiece frame) -> cleaned frame, int16, one 512-sample frame at a time."""


def _aec3() -> Canceller:
    aec = EchoCanceller()
    return lambda mic, far: np.frombuffer(aec.process(mic.tobytes(), far.tobytes()), "<i2")


def _livekit() -> Canceller | None:
    try:
        from livekit import rtc
    except ImportError:
        return None
    apm = rtc.AudioProcessingModule(echo_cancellation=True)
    step = RATE // 100
    pending = np.zeros(0, np.int16)
    out = np.zeros(step, np.int16)

    def run(mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        nonlocal pending, out
        pending = np.concatenate([pending, mic])
        farq = far
        while pending.size >= step:
            ref = rtc.AudioFrame(farq[:step].tobytes() if farq.size >= step else bytes(2 * step), RATE, 1, step)
            farq = farq[step:]
            apm.process_reverse_stream(ref)
            frame = rtc.AudioFrame(pending[:step].tobytes(), RATE, 1, step)
            apm.process_stream(frame)
            out = np.concatenate([out, np.frombuffer(bytes(frame.data), "<i2")])
            pending = pending[step:]
        result, out = out[: mic.size], out[mic.size :]
        return result

    return run


def _speex() -> Canceller | None:
    path = ctypes.util.find_library("speexdsp")
    if path is None:
        return None
    lib = ctypes.CDLL(path)
    lib.speex_echo_state_init.restype = ctypes.c_void_p
    state = lib.speex_echo_state_init(ctypes.c_int(FRAME), ctypes.c_int(RATE // 4))  # 250 ms tail
    rate = ctypes.c_int(RATE)
    lib.speex_echo_ctl(ctypes.c_void_p(state), 24, ctypes.byref(rate))  # SPEEX_ECHO_SET_SAMPLING_RATE

    def run(mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        out = np.zeros(FRAME, np.int16)
        lib.speex_echo_cancellation(
            ctypes.c_void_p(state),
            mic.ctypes.data_as(ctypes.c_void_p),
            np.ascontiguousarray(far).ctypes.data_as(ctypes.c_void_p),
            out.ctypes.data_as(ctypes.c_void_p),
        )
        return out

    return run


def _none() -> Canceller:
    return lambda mic, far: mic


def _speak(text: str) -> np.ndarray:
    from bench.rig import piper_pcm

    return np.frombuffer(piper_pcm(text), "<i2").astype(np.float32) / 32768


def _run(make: Callable[[], Canceller | None], mic: np.ndarray, far: np.ndarray) -> tuple[np.ndarray, float] | None:
    canceller = make()
    if canceller is None:
        return None
    mic16 = (np.clip(mic, -1, 1) * 32767).astype(np.int16)
    far16 = (np.clip(far, -1, 1) * 32767).astype(np.int16)
    started = time.process_time()
    out = [canceller(mic16[i : i + FRAME], far16[i : i + FRAME]) for i in range(0, mic16.size - FRAME + 1, FRAME)]
    cpu = time.process_time() - started
    return np.concatenate(out).astype(np.float32) / 32768, cpu / (mic.size / RATE)


def _speech_frames(vad: Any, audio: np.ndarray) -> tuple[int, int]:
    """Frames Silero takes for speech, and the longest run of them."""
    vad.reset()
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    frames = [pcm[i : i + 2 * FRAME] for i in range(0, len(pcm) - 2 * FRAME + 1, 2 * FRAME)]
    speech = [p >= 0.5 for p in vad.speech_probabilities(frames)]
    longest = run = 0
    for s in speech:
        run = run + 1 if s else 0
        longest = max(longest, run)
    return sum(speech), longest


def _db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", type=float, default=-10.0, help="echo level below the earpiece")
    args = parser.parse_args()
    from common.config import PiSTTConfig
    from pi_client.turns.stt import WhisperTranscriber
    from pi_client.turns.vad import SileroVad

    vad, whisper = SileroVad(), WhisperTranscriber(PiSTTConfig())
    reply, words = _speak(REPLY), _speak(INTERRUPTION)
    leak = HandsetLeak(args.db)
    cancellers = {"none": _none, "AEC3 (pywebrtc-audio)": _aec3, "AEC3 (livekit APM)": _livekit, "SpeexDSP": _speex}
    far = np.concatenate([np.zeros(RATE, np.float32), reply, np.zeros(RATE, np.float32)])
    echo = leak.leak(np.concatenate([np.zeros(leak.history, np.float32), far]))
    print(f"echo at {args.db:g} dB, {far.size / RATE:.1f} s of reply")
    print("| canceller | residual echo | speech on echo (longest run) | caller kept | CPU per s | Whisper heard |")
    print("|---|---|---|---|---|---|")
    for name, make in cancellers.items():
        only_echo = _run(make, echo, far)
        if only_echo is None:
            print(f"| {name} | not installed | | | | |")
            continue
        residual, cpu = only_echo
        n, longest = _speech_frames(vad, residual[RATE:])
        heard, kept = [], []
        for offset in (0.5, 1.5, 3.0):
            start = RATE + round(offset * RATE)
            played = far.copy()
            played[start + round(0.6 * RATE) :] = 0  # the barge-in stops the reply
            mic = leak.leak(np.concatenate([np.zeros(leak.history, np.float32), played]))
            mic[start : start + words.size] += words
            result = _run(make, mic, played)
            assert result is not None
            out = result[0]
            seg = out[start - RATE // 2 : start + words.size + RATE // 2]
            kept.append(_db(out[start : start + words.size]) - _db(words))
            heard.append(whisper.transcribe((np.clip(seg, -1, 1) * 32767).astype("<i2").tobytes()))
        print(
            f"| {name} | {_db(residual[RATE:]) - _db(echo[RATE:]):.0f} dB | {n * FRAME / RATE:.2f} s "
            f"({longest * FRAME / RATE:.2f} s) | {np.mean(kept):+.1f} dB | {cpu * 1000:.1f} ms | {' / '.join(heard)} |"
        )


if __name__ == "__main__":
    main()
