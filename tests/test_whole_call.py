"""``python -m pi_client --whole-call``: a recorded call is the live microphone, the earpiece a file on its clock.

Real Silero, Smart Turn and Whisper on Piper speech (noise off), a real ``cloud_server`` behind
the Ollama stand-in. The clock runs twice as fast as real time (``--clock-speed``, for tests):
every position is counted in call samples, so what is asserted about the call does not change.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.wav import read_wav_pcm16, write_wav
from tests.fixtures_pi import PI_RATE, silence
from tests.helpers import wait_for, word_set
from tests.ollama_standin import OllamaStandIn
from tests.server_rig import ServerProcess, pi_config, run_pi_client
from tests.tone_check import keypad, peaks_between

QUESTION = "What is the capital of France?"
INTERRUPTION = "Wait, what is the weather like in London?"
BACKCHANNEL = "Yeah."
LONG_REPLY = (
    "Paris is the capital of France. ",
    "It is a lovely city to visit in the spring, with parks and cafes along the river. ",
)
"""About seven seconds of speech: whatever the machine's speed, the caller's later words land inside it."""
MORE = tuple(step for i in range(12) for step in (f"Many people go there, {i + 1} million every year. ", 0.7))
"""More reply, one sentence every 0.7 s (the server writes all along): once the phone closes the request,
the server notices and stops asking the LLM."""
SPEED = "2"


def loud_spans(pcm: bytes, level: int = 500, hop: float = 0.05) -> list[tuple[float, float]]:
    """(start, end) seconds of the stretches above ``level``, gaps shorter than 0.6 s bridged."""
    x = np.abs(np.frombuffer(pcm, dtype="<i2"))
    step = round(hop * PI_RATE)
    env = x[: x.size - x.size % step].reshape(-1, step).max(axis=1) > level
    spans: list[tuple[float, float]] = []
    for i in np.flatnonzero(env):
        t = i * hop
        if spans and t - spans[-1][1] < 0.6:
            spans[-1] = (spans[-1][0], t + hop)
        else:
            spans.append((t, t + hop))
    return spans


def calls_chats(standin: OllamaStandIn) -> list[Any]:
    """The streamed chats: a call's replies (the server's start-up warm-up chats are not streamed)."""
    return [r for r in standin.chat_requests() if r.stream is not False]


def turn_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "turn: heard=" in line]


def record_call(path: Path, *parts: bytes) -> list[float]:
    """Write the call's microphone; returns where each part starts, in seconds."""
    starts, at = [], 0
    for part in parts:
        starts.append(at / 2 / PI_RATE)
        at += len(part)
    write_wav(str(path), b"".join(parts), PI_RATE)
    return starts


def after_first_request(standin: OllamaStandIn, *steps: Any) -> threading.Thread:
    """Once the first chat of this call arrives, script the replies that follow (short: the test stays quick)."""
    seen = len(calls_chats(standin))

    def rescript() -> None:
        wait_for(lambda: len(calls_chats(standin)) > seen, 120.0, "the first request")
        standin.script(*steps)

    thread = threading.Thread(target=rescript, daemon=True)
    thread.start()
    return thread


def test_the_caller_interrupts_the_reply_and_is_answered(
    call_server: ServerProcess,
    call_standin: OllamaStandIn,
    call_whisper: Any,
    piper_speech: Callable[[str], bytes],
    tmp_path: Path,
) -> None:
    """Barge-in mid-reply, the earpiece leaking back at -10 dB: the reply stops, the request closes,
    the interruption (its first word included) is the next turn, and the earpiece file is on the call's clock."""
    call = tmp_path / "call.wav"
    starts = record_call(
        call, silence(3.0), piper_speech(QUESTION), silence(6.0), piper_speech(INTERRUPTION), silence(1.0)
    )
    barge_at = starts[3]
    first = len(calls_chats(call_standin))
    call_standin.script(*LONG_REPLY, *MORE)
    rescript = after_first_request(call_standin, "It is raining in London. ")
    ear = tmp_path / "ear.wav"
    result = run_pi_client(
        pi_config(tmp_path),
        call_server.url,
        call_server.key,
        call,
        ear,
        "--whole-call",
        "--echo-db",
        "-10",
        "--clock-speed",
        SPEED,
    )
    rescript.join(timeout=5)
    assert result.returncode == 0, result.stderr[-3000:]
    chats = calls_chats(call_standin)[first:]
    assert len(chats) == 2, result.stderr[-3000:]
    # The phone closed the first request: the server stopped generating (the stand-in saw it hang up).
    assert chats[0].client_closed.wait(10) and not chats[0].completed
    # The interruption is the next turn. Only "London" is asserted: under the double talk AEC3 may
    # garble its other words ("weather" came back as something else once in CI).
    assert "london" in word_set(chats[1].messages[-1]["content"]), chats[1].messages[-1]
    # The next turn's history holds the reply only as far as the caller heard it (POST .../heard).
    answered = chats[1].messages[-2]
    assert answered["role"] == "assistant" and "million" not in word_set(answered["content"]), answered
    # Not asserted here: "Wait," itself. Over the reply at -10 dB echo, AEC3 sometimes suppresses that
    # first word during the double talk (1 run in 4 on this machine); the onset rule that keeps it is
    # tested in test_barge_in.py, and the double-talk loss is listed as left in issue 9.
    first_turn, second_turn = turn_lines(result.stderr)
    assert "outcome=interrupted" in first_turn and re.search(r"barge_in=\d+\.\d\ds", first_turn)
    assert "outcome=done" in second_turn and "barge_in=-" in second_turn
    assert re.search(r"end_by=(model|silence)", second_turn)
    # The earpiece is aligned with the call: as long as it, the reply cut soon after the caller's first word.
    recording, _ = read_wav_pcm16(str(call), PI_RATE)
    earpiece, _ = read_wav_pcm16(str(ear), PI_RATE)
    assert len(earpiece) >= len(recording)
    spans = loud_spans(earpiece)
    reply_start, cut = next((start, end) for start, end in spans if start < barge_at < end)
    # "Wait," alone is shorter than min_speech_seconds: the cut comes with "what is the weather".
    assert barge_at < cut < barge_at + 1.5, (barge_at, spans)
    answer_start = next(start for start, _ in spans if start > cut)
    before = call_whisper.transcribe(earpiece[round(reply_start * PI_RATE) * 2 : round(cut * PI_RATE) * 2])
    after = call_whisper.transcribe(earpiece[round(answer_start * PI_RATE) * 2 :])
    # What the log says the caller heard is what the earpiece file holds, on the same clock.
    heard = float(re.findall(r"barge_in=(\d+\.\d\d)s", first_turn)[0])
    assert abs((cut - reply_start) - heard) < 0.35, (cut, reply_start, heard)
    assert "million" not in word_set(before + after), (before, after)  # the rest of the reply never played
    if heard > 1.5:  # (a slow machine answers late, and the cut comes early in the reply)
        assert "capital" in word_set(before), before  # its first sentence played
    assert {"raining", "london"} <= word_set(after), after


def test_a_backchannel_and_the_echo_do_not_stop_the_reply(
    call_server: ServerProcess,
    call_standin: OllamaStandIn,
    call_whisper: Any,
    piper_speech: Callable[[str], bytes],
    tmp_path: Path,
) -> None:
    """Touch tones in the recording dial the number; then a "yeah" over the reply, the earpiece leaking
    back at -10 dB: the reply plays to its end, once."""
    call = tmp_path / "call.wav"
    dialed = silence(1.0) + keypad("0") + silence(8.0)  # dial tone, the key, ringback and the greeting
    record_call(call, dialed, piper_speech(QUESTION), silence(5.5), piper_speech(BACKCHANNEL), silence(1.0))
    first = len(calls_chats(call_standin))
    call_standin.script(*LONG_REPLY)
    ear = tmp_path / "ear.wav"
    result = run_pi_client(
        pi_config(tmp_path, directory={"0": "operator", "7": "nobody"}),
        call_server.url,
        call_server.key,
        call,
        ear,
        "--whole-call",
        "--echo-db",
        "-10",
        "--clock-speed",
        SPEED,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "number 0: operator" in result.stderr and "connected to operator" in result.stderr
    assert len(calls_chats(call_standin)) == first + 1, result.stderr[-3000:]  # "yeah" was not a turn
    (turn,) = turn_lines(result.stderr)
    assert "outcome=done" in turn and "barge_in=-" in turn, turn
    assert "too short to interrupt" in result.stderr
    earpiece, _ = read_wav_pcm16(str(ear), PI_RATE)
    reply_start = next(start for start, _ in loud_spans(earpiece) if start > len(dialed) / 2 / PI_RATE + 2.0)
    heard = call_whisper.transcribe(earpiece[round(reply_start * PI_RATE) * 2 :])
    assert {"capital", "spring", "river"} <= word_set(heard), heard


PAUSED = ("Could you tell me", "the name of the longest river?")


def test_a_paused_question_is_answered_once_with_all_its_words(
    call_server: ServerProcess,
    call_standin: OllamaStandIn,
    piper_speech: Callable[[str], bytes],
    tmp_path: Path,
) -> None:
    """The caller pauses 0.8 s mid-question; the phone takes the pause for the end of the turn (Smart Turn
    judges "Could you tell me" finished) and asks the server. The caller goes on before any reply is heard:
    that request is dropped, the question is asked once, whole, and nothing of it plays inside the pause.
    Real time (the wait for the caller's silence is on the phone's clock)."""
    call = tmp_path / "call.wav"
    starts = record_call(
        call, silence(4.0), piper_speech(PAUSED[0]), silence(0.8), piper_speech(PAUSED[1]), silence(3.0)
    )
    first = len(calls_chats(call_standin))
    call_standin.script("The Nile is the longest river. ")
    ear = tmp_path / "ear.wav"
    result = run_pi_client(pi_config(tmp_path), call_server.url, call_server.key, call, ear, "--whole-call")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "went on talking before the reply" in result.stderr, result.stderr[-3000:]  # the pause was taken for an end
    (turn,) = [t for t in turn_lines(result.stderr) if "outcome=" in t]  # one turn answered
    assert "outcome=done" in turn and "longest river" in turn.lower(), turn
    # What the server got last: the whole question, and a history without the half it was first asked
    # (no audio of that reply went out, so the server recorded nothing of it).
    chats = calls_chats(call_standin)[first:]
    asked = [m["content"] for m in chats[-1].messages if m["role"] == "user"]
    assert len(asked) == 1, asked
    assert {"could", "tell", "longest", "river"} <= word_set(asked[0]), asked
    earpiece, _ = read_wav_pcm16(str(ear), PI_RATE)
    heard = [start for start, _ in loud_spans(earpiece) if start > starts[1]]
    assert heard and heard[0] > starts[4], (heard, starts)  # no reply before the caller's last word


def test_a_whole_call_dials_hears_the_greeting_talks_says_goodbye_and_hears_busy(
    call_server: ServerProcess,
    call_standin: OllamaStandIn,
    call_whisper: Any,
    piper_speech: Callable[[str], bytes],
    tmp_path: Path,
) -> None:
    """Dial tone, a touch-tone 0 in the recording, the operator's greeting in the server's voice, a
    question and its answer, "goodbye", and the busy tone that ends the file."""
    call = tmp_path / "call.wav"
    dialed = silence(1.0) + keypad("0") + silence(8.0)
    starts = record_call(
        call, dialed, piper_speech(QUESTION), silence(5.0), piper_speech("Goodbye."), silence(5.0)
    )  # ("Thank you, goodbye." ends at the comma for Smart Turn, and a lone "bye" is not always long enough
    # to count as going on: see test_a_paused_question_is_answered_once_with_all_its_words for pauses.)
    call_standin.script("Paris is the capital of France.")
    after_first_request(call_standin, "You are welcome, goodbye.")
    ear = tmp_path / "ear.wav"
    result = run_pi_client(
        pi_config(tmp_path, directory={"0": "operator"}),
        call_server.url,
        call_server.key,
        call,
        ear,
        "--whole-call",
        "--clock-speed",
        SPEED,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "number 0: operator" in result.stderr and "connected to operator" in result.stderr
    earpiece, _ = read_wav_pcm16(str(ear), PI_RATE)

    def heard_between(start: float, end: float) -> set[str]:
        return word_set(call_whisper.transcribe(earpiece[round(start * PI_RATE) * 2 : round(end * PI_RATE) * 2]))

    assert peaks_between(earpiece, PI_RATE, 0.2, 0.8, 2) == approx_hz([350.0, 440.0])  # dial tone before the key
    assert "operator" in heard_between(1.3, starts[1])  # the greeting, in the server's voice
    assert {"capital", "france"} <= heard_between(starts[1], starts[3])
    _, last_sound = loud_spans(earpiece)[-1]  # the call's last sound: the busy tone after the goodbye reply
    assert last_sound > starts[3] + 1.0
    windows = np.arange(last_sound - 2.0, last_sound - 0.3, 0.1)
    tones = [peaks_between(earpiece, PI_RATE, t, t + 0.3, 2) for t in windows]
    assert [480.0, 620.0] in [pytest.approx(t, abs=6.0) for t in tones if len(t) == 2], tones
    assert "goodbye" in turn_lines(result.stderr)[-1].lower()  # the caller's goodbye was the last turn


def approx_hz(freqs: list[float]) -> Any:
    """Tone frequencies as the tone plans give them, within a few Hz (the FFT's resolution)."""
    return pytest.approx(freqs, abs=6.0)
