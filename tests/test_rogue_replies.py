"""The phone against a server that answers badly: endless, trickling, or with a WAV header it cannot play.

File mode runs as users run it (``python -m pi_client --input-wav Q.wav --output-wav R.wav``) and
must end on its own; the in-process phone plays through real aplay into the ALSA file rig, and no
aplay may be left behind. Whisper tells what the caller heard: the phone's "the line dropped" or
its offline message.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from common.wav import read_wav_pcm16, write_wav
from pi_client.audio.playback import AplaySink
from pi_client.call.machine import Outcome
from tests.alsa_rig import AlsaRig
from tests.fixtures_pi import PI_RATE
from tests.helpers import aplay_children, word_set
from tests.phone_rig import BROKEN_WORDS, OFFLINE_WORDS, build_phone, heard
from tests.rogue_server import Mode, RogueServer
from tests.server_rig import pi_config, run_pi_client

WAIT = 120.0


def file_mode_turn(mode: Mode, question: Path, tmp_path: Path, **client: Any) -> tuple[str, Path, float]:
    """One file-mode turn against a rogue server: the phone's log, the last 8 s it played, seconds played."""
    reply = tmp_path / "r.wav"
    with RogueServer(mode) as server:
        # run_pi_client fails the test if the phone has not exited within WAIT: file mode must end by itself.
        result = run_pi_client(
            pi_config(tmp_path, client=client), server.url, server.key, question, reply, timeout=WAIT
        )
        assert mode == "slow_header" or server.hung_up.wait(10), "the phone kept the bad reply open"
    assert result.returncode == 0, result.stderr[-3000:]
    pcm, _ = read_wav_pcm16(str(reply), PI_RATE)
    tail = tmp_path / "tail.wav"  # Whisper on the ending alone: the tone before it holds no words
    write_wav(str(tail), pcm[-8 * PI_RATE * 2 :], PI_RATE)
    return result.stderr, tail, len(pcm) / 2 / PI_RATE


def test_an_endless_reply_is_cut_at_max_reply_seconds_then_the_line_dropped(
    call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    log, tail, seconds = file_mode_turn("endless", call_question_wav, tmp_path, max_reply_seconds=6.0)
    assert "reply broke off: reply longer than 6s of audio" in log
    text, _ = heard(call_whisper, tail)
    assert len(word_set(text) & BROKEN_WORDS) >= 3, text
    assert 6.0 + 2.0 < seconds < 6.0 + 10.0  # six seconds of the reply, then the phone's message


def test_a_trickling_reply_is_dropped_then_the_line_dropped(
    call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    log, tail, _ = file_mode_turn("trickle", call_question_wav, tmp_path, read_timeout_seconds=2.0)
    assert "reply broke off: the reply trickled" in log
    text, _ = heard(call_whisper, tail)
    assert len(word_set(text) & BROKEN_WORDS) >= 3, text


def test_a_header_trickling_in_before_any_audio_gets_the_offline_voice(
    call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    # Before the first audio the first-audio deadline applies, however many bytes dribble in.
    log, tail, _ = file_mode_turn("slow_header", call_question_wav, tmp_path, first_audio_timeout_seconds=3.0)
    assert "no audio within 3.0s" in log
    text, _ = heard(call_whisper, tail)
    assert len(word_set(text) & OFFLINE_WORDS) >= 3, text


@pytest.mark.parametrize("mode", ["rate0", "stereo"])
def test_a_header_the_phone_cannot_play_gets_the_offline_voice_and_leaves_no_aplay(
    mode: Mode, call_whisper: Any, call_question_wav: Path, alsa_rig: AlsaRig, tmp_path: Path
) -> None:
    sink = AplaySink(env={"ALSA_CONFIG_PATH": alsa_rig.env()["ALSA_CONFIG_PATH"]})

    async def one_turn(server: RogueServer) -> Any:
        rig = build_phone(server, call_question_wav, call_whisper, tmp_path, sink)  # type: ignore[arg-type]
        try:
            return await rig.phone.run_one_turn()
        finally:
            await rig.close()

    with RogueServer(mode) as server:
        turn = asyncio.run(asyncio.wait_for(one_turn(server), WAIT))
    assert turn is not None and turn.outcome is Outcome.UNREACHABLE
    assert aplay_children() == []
    text, _ = heard(call_whisper, alsa_rig.outfile)  # the rig's file holds the last thing aplay played
    assert len(word_set(text) & OFFLINE_WORDS) >= 3, text
