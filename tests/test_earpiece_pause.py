"""The earpiece pauses at the caller's first word over it and plays on when that was no barge-in.

Whole calls in-process (real Silero, Smart Turn, Whisper, the real ``cloud_server`` with its Piper
voice; the earpiece leaking back at -10 dB): a "Yeah." over the reply pauses it and the reply then
plays on to its last sample, nothing skipped; a "Stop, ..." silences the earpiece sooner than a
barge-in is confirmed; a first word ended on its own still starts the interruption. Then aplay
itself: a pause kills the player (what it holds must not play on), the resume plays on from the
paused sample.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common.config import BargeInConfig
from common.wav import read_wav_pcm16, resample_pcm16
from pi_client.audio.playback import AplaySink
from pi_client.audio.recorded_call import LineEarpiece
from pi_client.audio.telephone_band import TelephoneBandSink
from tests.alsa_rig import AlsaRig
from tests.fixtures_pi import PI_RATE, silence
from tests.helpers import tone_pcm16, word_set
from tests.ollama_standin import OllamaStandIn
from tests.phone_rig import alive
from tests.server_rig import ServerProcess
from tests.test_barge_in import _call, models  # noqa: F401 - the module's models fixture, loaded once
from tests.test_whole_call import BACKCHANNEL, LONG_REPLY, MORE, QUESTION, after_first_request, calls_chats, record_call

STOP = "Stop, tell me about London instead."


class WrittenEarpiece(LineEarpiece):
    """The recorded call's earpiece, also keeping every utterance as it was written (at 16 kHz)."""

    def __init__(self, line: Any) -> None:
        super().__init__(line)
        self.written: list[list[np.ndarray]] = []
        self._at = PI_RATE

    async def start(self, sample_rate: int) -> None:
        await super().start(sample_rate)
        self.written.append([])
        self._at = sample_rate

    async def write(self, pcm: bytes) -> None:
        self.written[-1].append(np.frombuffer(resample_pcm16(pcm, self._at, PI_RATE), dtype="<i2"))
        await super().write(pcm)


def _samples(seconds: float) -> int:
    return round(seconds * PI_RATE)


def _silent_from(earpiece: np.ndarray, at: float, hold: float = 0.15) -> float:
    """Call seconds from which the earpiece is exactly silent for ``hold`` seconds, searching from ``at``."""
    quiet = earpiece[_samples(at) :] == 0
    run = _samples(hold)
    sums = np.convolve(quiet.astype(int), np.ones(run, dtype=int), mode="valid")
    return at + int(np.flatnonzero(sums == run)[0]) / PI_RATE


def test_a_backchannel_pauses_the_reply_which_then_plays_on_to_its_last_word(
    call_server: ServerProcess,
    call_standin: OllamaStandIn,
    models: dict[str, Any],  # noqa: F811 - the fixture imported above
    piper_speech: Callable[[str], bytes],
    tmp_path: Path,
) -> None:
    recording = tmp_path / "call.wav"
    starts = record_call(
        recording, silence(3.0), piper_speech(QUESTION), silence(5.5), piper_speech(BACKCHANNEL), silence(2.0)
    )
    first = len(calls_chats(call_standin))
    call_standin.script(*LONG_REPLY)
    call = _call(call_server, models, tmp_path, recording, earpiece=WrittenEarpiece, speed=2)
    phone, ear, _, sink = asyncio.run(call)
    assert len(calls_chats(call_standin)) == first + 1  # "yeah" was not a turn
    (turn,) = phone.turns
    assert turn.heard_seconds is None and turn.pauses >= 1 and turn.resumes == turn.pauses
    assert sink.cuts == []
    # The reply is the utterance playing when the caller spoke; the pause came with "Yeah."
    reply = max(i for i, t in enumerate(sink.starts) if t < sink.pauses[0])
    assert any(starts[3] <= p < starts[3] + 0.5 for p in sink.pauses), (starts[3], sink.pauses)
    # The earpiece file from the reply's start holds the reply exactly as the server sent it, nothing
    # skipped or repeated: only silence was put in (the pause; a stream running late adds some too).
    earpiece = np.frombuffer(read_wav_pcm16(str(ear), PI_RATE)[0], dtype="<i2")
    played = earpiece[_samples(sink.starts[reply]) :].astype(int)
    written = np.concatenate(sink.written[reply]).astype(int)
    played, written = played[played != 0], written[written != 0]
    assert played.size == written.size and int(np.abs(played - written).max()) <= 1
    assert not earpiece[_samples(sink.pauses[0]) : _samples(sink.resumes[0])].any()  # silent while paused
    # ... and Whisper hears it, from its first words to its last.
    heard = models["whisper"].transcribe(earpiece[_samples(sink.starts[reply]) :].tobytes())
    assert {"capital", "spring", "river"} <= word_set(heard), heard


def test_a_short_stop_silences_the_earpiece_before_the_barge_in_is_confirmed(
    call_server: ServerProcess,
    call_standin: OllamaStandIn,
    models: dict[str, Any],  # noqa: F811 - the fixture imported above
    piper_speech: Callable[[str], bytes],
    tmp_path: Path,
) -> None:
    recording = tmp_path / "call.wav"
    stop = piper_speech(STOP)
    starts = record_call(recording, silence(3.0), piper_speech(QUESTION), silence(6.5), stop, silence(2.0))
    said = np.abs(np.frombuffer(stop, dtype="<i2"))
    onset = starts[3] + int(np.flatnonzero(said > 600)[0]) / PI_RATE  # the first sample of "Stop"
    first = len(calls_chats(call_standin))
    call_standin.script(*LONG_REPLY, *MORE)
    rescript = after_first_request(call_standin, "London is lovely. ")
    lines: list[LineEarpiece] = []

    def band_limited(line: Any) -> TelephoneBandSink:  # as the live phone's earpiece with pi.audio.telephone_band
        lines.append(LineEarpiece(line))
        return TelephoneBandSink(lines[0])

    phone, ear, _, _ = asyncio.run(_call(call_server, models, tmp_path, recording, earpiece=band_limited, speed=2))
    sink = lines[0]
    rescript.join(timeout=5)
    chats = calls_chats(call_standin)[first:]
    assert len(chats) == 2 and chats[0].client_closed.wait(10) and not chats[0].completed  # a barge-in
    assert "london" in word_set(chats[1].messages[-1]["content"])
    # In the call's audio time: the earpiece went silent sooner after "Stop" than a barge-in can be
    # confirmed (min_speech_seconds of talking), and stayed silent until the cut.
    earpiece = np.frombuffer(read_wav_pcm16(str(ear), PI_RATE)[0], dtype="<i2")
    quiet = _silent_from(earpiece, onset)
    assert onset < quiet < onset + BargeInConfig().min_speech_seconds, (onset, quiet, sink.pauses, sink.cuts)
    cut = next(c for c in sink.cuts if c > onset)
    assert not earpiece[_samples(quiet) : _samples(cut)].any()
    # What the caller heard ends at the pause, not at the confirmation.
    reply = max(t for t in sink.starts if t < onset)
    assert abs(phone.turns[0].heard_seconds - (quiet - reply)) < 0.1, (phone.turns[0].heard_seconds, quiet, reply)


def test_a_first_word_the_turn_detector_ends_on_its_own_still_starts_the_interruption(
    call_server: ServerProcess,
    call_standin: OllamaStandIn,
    models: dict[str, Any],  # noqa: F811 - the fixture imported above
    piper_speech: Callable[[str], bytes],
    tmp_path: Path,
) -> None:
    """"Yeah." pauses the earpiece and ends as an utterance of its own, too short to interrupt;
    "tell me about London" follows while the earpiece is still paused and makes the barge-in:
    Whisper hears both, as one turn."""
    recording = tmp_path / "call.wav"
    said = piper_speech(BACKCHANNEL) + silence(0.1) + piper_speech("Tell me about London.")  # Piper's own edges: ~0.4 s
    record_call(recording, silence(3.0), piper_speech(QUESTION), silence(6.5), said, silence(2.0))
    first = len(calls_chats(call_standin))
    call_standin.script(*LONG_REPLY, *MORE)
    rescript = after_first_request(call_standin, "All right. ")
    asyncio.run(_call(call_server, models, tmp_path, recording, speed=2))
    rescript.join(timeout=5)
    chats = calls_chats(call_standin)[first:]
    assert len(chats) == 2, chats
    assert {"yeah", "london"} <= word_set(chats[1].messages[-1]["content"]), chats[1].messages[-1]


def test_aplay_pause_kills_the_player_and_resume_plays_on_from_the_paused_sample(alsa_rig: AlsaRig) -> None:
    """ALSA's file device here takes audio at once, so the paused position is wall time since aplay
    started (the sink's estimate); what plays after the resume is the rest, from that sample on."""
    audio = tone_pcm16(2.0, 16000)
    late = tone_pcm16(0.5, 16000, freq=880.0)

    async def play() -> tuple[int, float]:
        sink = AplaySink(env={"ALSA_CONFIG_PATH": alsa_rig.env()["ALSA_CONFIG_PATH"]})
        await sink.start(16000)
        await sink.write(audio)
        await asyncio.sleep(0.3)
        pid = sink.pid
        assert pid is not None
        assert np.frombuffer(sink.history.segment(time.monotonic(), 1600), "<i2").any()  # the echo reference
        sink.pause()
        at = sink.played_seconds
        assert sink.paused and sink.pid is None
        assert not np.frombuffer(sink.history.segment(time.monotonic(), 1600), "<i2").any()  # nothing plays now
        await sink.write(late)  # the reply goes on streaming in while paused
        await asyncio.sleep(0.3)
        assert sink.played_seconds == at  # nothing plays while paused
        sink.resume()
        await asyncio.wait_for(sink.finish(), 20)
        return pid, at

    pid, at = asyncio.run(play())
    assert not alive(pid)
    assert 0.3 <= at < 1.0
    played, rate = read_wav_pcm16(str(alsa_rig.outfile))  # the resumed aplay's output
    rest = audio[_samples(at) * 2 :] + late
    assert rate == 16000 and len(played) >= len(rest)
    got, want = np.frombuffer(played[: len(rest)], "<i2").astype(int), np.frombuffer(rest, "<i2").astype(int)
    assert int(np.abs(got - want).max()) <= 1
