"""Real Smart Turn v3.2 (packaged in pipecat-ai) on Piper speech, alone and behind real Silero VAD in listen()."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from common.config import SmartTurnConfig, VADConfig
from common.wav import write_wav
from pi_client.audio.capture import WavFileSource
from pi_client.turns.endpoint import Utterance, listen
from pi_client.turns.smart_turn import (
    SmartTurn,
    TurnDetector,
    TurnDetectorError,
    default_model_path,
    load_turn_detector,
)
from pi_client.turns.vad import SileroVad
from tests.fixtures_pi import PI_RATE, silence
from tests.server_rig import pi_config
from tests.test_pi_main import base_env, run_main

TURN_CFG = SmartTurnConfig()  # the shipped defaults: asked after 0.2 s, 0.5 threshold, 2.0 s ceiling
VAD_CFG = VADConfig()  # 0.6 s trailing silence when there is no model
COMPLETE = "What is the capital of France?"
CUT_OFF = "I would like to know about the"
TRAILING_OFF = "So I was thinking that maybe we could"  # among the model's clearest "not finished" on Piper speech
PAUSED = ("My name is John and I", "live in Chicago.")  # 0.01 after the first half, 0.95 after both


@pytest.fixture(scope="module")
def smart_turn() -> SmartTurn:
    return SmartTurn(TURN_CFG)


def _listen(pcm: bytes, tmp_path: Path, detector: TurnDetector | None) -> Utterance:
    path = tmp_path / "input.wav"
    write_wav(str(path), pcm, PI_RATE)
    listening = listen(WavFileSource(path), SileroVad(), VAD_CFG, detector)
    utt = asyncio.run(asyncio.wait_for(listening, timeout=60))
    assert utt is not None
    return utt


def test_a_complete_question_is_finished_and_a_cut_off_one_is_not(
    smart_turn: SmartTurn, piper_speech: Callable[[str], bytes]
) -> None:
    # What the endpointer hands the model: the turn followed by the 0.2 s of silence that triggered it.
    complete = smart_turn.is_finished(piper_speech(COMPLETE) + silence(0.2))
    cut_off = smart_turn.is_finished(piper_speech(CUT_OFF) + silence(0.2))
    trailing_off = smart_turn.is_finished(piper_speech(TRAILING_OFF) + silence(0.2))
    assert complete[0] and complete[1] > 0.9
    # Piper ends "...about the" with a falling, sentence-final tone: the model hovers near 0.5
    # there, so only the ordering is asserted; "...maybe we could" is clearly unfinished.
    assert cut_off[1] < complete[1] - 0.2
    assert not trailing_off[0] and trailing_off[1] < 0.2


def test_only_the_last_8_seconds_count(smart_turn: SmartTurn, piper_speech: Callable[[str], bytes]) -> None:
    turn = piper_speech(COMPLETE) + silence(0.2)
    assert smart_turn.probability(piper_speech(TRAILING_OFF) + silence(9.0) + turn) == pytest.approx(
        smart_turn.probability(turn), abs=1e-4
    )


def test_a_finished_question_ends_after_the_short_silence_not_the_long_one(
    smart_turn: SmartTurn, piper_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    recording = silence(0.5) + piper_speech(COMPLETE) + silence(2.0)
    by_model = _listen(recording, tmp_path, smart_turn)
    by_silence = _listen(recording, tmp_path, None)
    assert by_model.ended_by == "model"
    assert by_model.endpoint_delay_seconds == pytest.approx(TURN_CFG.check_after_silence_seconds, abs=0.05)
    assert by_silence.ended_by == "silence"
    assert by_silence.endpoint_delay_seconds == pytest.approx(VAD_CFG.trailing_silence_seconds, abs=0.05)


def test_a_mid_sentence_pause_does_not_end_the_turn(
    smart_turn: SmartTurn, piper_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    first, rest = piper_speech(PAUSED[0]), piper_speech(PAUSED[1])
    utt = _listen(silence(0.5) + first + silence(0.5) + rest + silence(2.0), tmp_path, smart_turn)
    # One utterance holding both halves (asked at the pause: "not finished"), ended by the model after the second.
    assert utt.speech_seconds > (len(first) + len(rest)) / 2 / PI_RATE
    assert utt.ended_by == "model"
    assert utt.endpoint_delay_seconds == pytest.approx(TURN_CFG.check_after_silence_seconds, abs=0.05)


def test_a_local_model_path_is_used_and_a_bad_one_is_a_setting_error(tmp_path: Path) -> None:
    local = tmp_path / "smart-turn.onnx"
    shutil.copy(default_model_path(), local)
    assert isinstance(load_turn_detector(SmartTurnConfig(model_path=str(local))), SmartTurn)
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(TurnDetectorError, match=r"pi\.turns\.smart_turn\.model_path"):
        load_turn_detector(SmartTurnConfig(model_path=str(tmp_path / "broken.onnx")))
    assert load_turn_detector(SmartTurnConfig(enabled=False)) is None


def test_the_phone_refuses_to_start_with_a_missing_model_naming_the_setting(tmp_path: Path) -> None:
    config = pi_config(tmp_path, turns={"smart_turn": {"model_path": str(tmp_path / "missing.onnx")}})
    result = run_main("--config", str(config), env=base_env(AI_TELEPHONE_API_KEY="k", HF_HUB_OFFLINE="1"))
    assert result.returncode == 1
    assert "ERROR pi_client: pi.turns.smart_turn.model_path: no model file" in result.stderr.strip().splitlines()[-1]
