"""The phone as users run it, ``python -m pi_client`` in one-turn file mode, against a real ``cloud_server``.

The Ollama stand-in is the server's LLM; Whisper listens to what the earpiece would have played.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from common.wav import read_wav_pcm16
from tests.helpers import wait_for, word_set
from tests.ollama_standin import OllamaStandIn
from tests.phone_rig import BROKEN_WORDS, OFFLINE_WORDS, heard
from tests.server_rig import (
    ServerProcess,
    free_port,
    pi_client_process,
    pi_config,
    run_pi_client,
    start_server,
)
from tests.tone_check import peaks_between

WAIT = 120.0


def last_chat(standin: OllamaStandIn) -> Any:
    requests = standin.chat_requests()
    assert requests, "the server never asked the LLM"
    return requests[-1]


def test_a_whole_turn_in_file_mode(
    call_server: ServerProcess, call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    call_standin.script("The capital of France is Paris. ", "It is a lovely city to visit in the spring.")
    reply = tmp_path / "r.wav"
    result = run_pi_client(pi_config(tmp_path), call_server.url, call_server.key, call_question_wav, reply)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ""
    # The server's LLM was asked what the caller said (Whisper on the Pi got it right).
    user_text = last_chat(call_standin).messages[-1]["content"].lower()
    assert {"capital", "france"} <= word_set(user_text)
    text, seconds = heard(call_whisper, reply)
    assert {"lovely", "city", "spring"} <= word_set(text), text
    assert 3.0 < seconds < 15.0
    # One INFO line for the turn: transcript, reply text (from /sessions) and stage timings.
    turn_line = next(line for line in result.stderr.splitlines() if "turn: heard=" in line)
    assert "capital of France" in turn_line and "Paris" in turn_line
    for stage in ("endpoint=", "stt=", "first_audio=", "latency=", "total="):
        assert re.search(stage + r"\d+\.\d\ds", turn_line), stage
    assert call_server.key not in result.stderr  # the key never reaches the log


def test_a_whole_turn_with_the_server_transcribing(
    call_server: ServerProcess, call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    """pi.stt.use_server: the recording goes to /process-audio; the transcript comes back in a header."""
    call_standin.script("It is a lovely city to visit in the spring. ")
    reply = tmp_path / "r.wav"
    config = pi_config(tmp_path, stt={"use_server": True})
    result = run_pi_client(config, call_server.url, call_server.key, call_question_wav, reply)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Loading" not in result.stderr and "Transcribed" not in result.stderr  # no Whisper on the Pi
    assert {"capital", "france"} <= word_set(last_chat(call_standin).messages[-1]["content"])
    turn_line = next(line for line in result.stderr.splitlines() if "turn: heard=" in line)
    assert "capital of France" in turn_line and "stt=-" in turn_line
    text, _ = heard(call_whisper, reply)
    assert {"lovely", "city", "spring"} <= word_set(text), text


def test_server_down_the_phone_answers_in_its_own_voice(
    call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    reply = tmp_path / "r.wav"
    nobody = f"http://127.0.0.1:{free_port()}"
    result = run_pi_client(pi_config(tmp_path), nobody, "some-key", call_question_wav, reply)
    assert result.returncode == 0, result.stderr[-3000:]
    text, seconds = heard(call_whisper, reply)
    assert len(word_set(text) & OFFLINE_WORDS) >= 3, text
    assert 2.0 < seconds < 10.0
    assert "unavailable" in result.stderr


def test_no_first_audio_in_time_gets_the_offline_voice_and_drops_the_request(
    call_server: ServerProcess, call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    call_standin.script(60.0, "Far too late.")
    reply = tmp_path / "r.wav"
    config = pi_config(tmp_path, client={"first_audio_timeout_seconds": 3.0})
    result = run_pi_client(config, call_server.url, call_server.key, call_question_wav, reply, timeout=WAIT)
    assert result.returncode == 0, result.stderr[-3000:]
    text, _ = heard(call_whisper, reply)
    assert len(word_set(text) & OFFLINE_WORDS) >= 3, text
    assert "no audio within 3.0s" in result.stderr


def test_a_refused_key_is_logged_and_the_caller_still_hears_something(
    call_server: ServerProcess, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    reply = tmp_path / "r.wav"
    result = run_pi_client(pi_config(tmp_path), call_server.url, "wrong-key", call_question_wav, reply)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "server refused the turn: 401" in result.stderr
    text, _ = heard(call_whisper, reply)
    assert len(word_set(text) & OFFLINE_WORDS) >= 3, text


def test_server_killed_mid_reply_plays_what_arrived_then_the_reorder_tone_of_a_dropped_call(
    call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    call_standin.script("Here is the first part of my answer. ", 60.0, "You will never hear this second part.")
    before = len(call_standin.chat_requests())
    doomed = start_server(tmp_path / "doomed", call_standin.url)
    reply = tmp_path / "r.wav"
    try:
        phone = pi_client_process(pi_config(tmp_path), doomed.url, doomed.key, call_question_wav, reply)
        wait_for(
            lambda: len(call_standin.chat_requests()) > before and call_standin.chat_requests()[-1].pieces_sent >= 1,
            WAIT,
            "the LLM's first sentence",
        )
        time.sleep(2.0)  # the first sentence is synthesized and streamed; the LLM now pauses for a minute
        doomed.kill()
        stdout, stderr = phone.communicate(timeout=60)
    finally:
        doomed.stop()
    assert phone.returncode == 0, stderr[-3000:]
    assert stdout == ""
    assert "reply broke off" in stderr
    text, _ = heard(call_whisper, reply)
    said = word_set(text)
    assert {"first", "part", "answer"} <= said, text
    assert "never" not in said
    # No server answers any more: the call has dropped, and the file ends with the reorder tone.
    assert "the line dropped: no server answers" in stderr
    pcm, rate = read_wav_pcm16(str(reply))
    assert peaks_between(pcm, rate, -1.98, -1.77, 2) == pytest.approx([480.0, 620.0], abs=6.0)
    assert not said & BROKEN_WORDS, text  # not "say that again" into a dead line


def test_a_reply_that_stalls_mid_stream_counts_as_broken(
    call_server: ServerProcess, call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    call_standin.script("Here is the first part of my answer. ", 60.0, "You will never hear this second part.")
    reply = tmp_path / "r.wav"
    config = pi_config(tmp_path, client={"read_timeout_seconds": 2.0})
    result = run_pi_client(config, call_server.url, call_server.key, call_question_wav, reply, timeout=WAIT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reply broke off" in result.stderr
    said = word_set(heard(call_whisper, reply)[0])
    assert {"first", "part", "answer"} <= said, said
    assert len(said & BROKEN_WORDS) >= 3, said
    # The phone dropped the stalled request: the server stopped asking the LLM for the rest.
    assert last_chat(call_standin).client_closed.wait(timeout=30)
