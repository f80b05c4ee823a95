"""The endpointer, driven with numbers: 0.1 s frames, probabilities 0.9 (speech) and 0.05 (silence)."""

from __future__ import annotations

import pytest

from common.config import SmartTurnConfig, VADConfig
from pi_client.turns.endpoint import Endpointer, EndpointEvent

FRAME = 0.1
S, Q = 0.9, 0.05  # speech, quiet
CFG = VADConfig(
    threshold=0.5,
    trailing_silence_seconds=0.5,
    min_speech_seconds=0.3,
    max_utterance_seconds=3.0,
    preroll_seconds=0.2,
    no_speech_timeout_seconds=2.0,
)


def _run(probs: list[float], cfg: VADConfig = CFG) -> tuple[Endpointer, list[tuple[int, EndpointEvent]]]:
    ep = Endpointer(cfg, FRAME)
    events = [(i, e) for i, p in enumerate(probs) if (e := ep.process(p)) is not EndpointEvent.NONE]
    return ep, events


def test_speech_then_trailing_silence_ends_the_utterance() -> None:
    ep, events = _run([Q] * 5 + [S] * 10 + [Q] * 8)
    # speech from frame 5; confirmed after 3 frames (0.3 s); last speech frame 14; ended after 5 quiet frames
    assert events == [(7, EndpointEvent.SPEECH_STARTED), (19, EndpointEvent.UTTERANCE_ENDED)]
    assert ep.speech_start_frame == 5
    assert ep.last_speech_frame == 14
    assert ep.speech_seconds == pytest.approx(1.0)
    assert ep.endpoint_delay_seconds == pytest.approx(0.5)
    assert ep.utterance_start_frame == 3  # two frames of pre-roll


def test_preroll_never_reaches_before_the_start() -> None:
    ep, events = _run([S] * 5 + [Q] * 5)
    assert events[-1] == (9, EndpointEvent.UTTERANCE_ENDED)
    assert ep.utterance_start_frame == 0


def test_a_pause_shorter_than_the_trailing_silence_does_not_end_it() -> None:
    ep, events = _run([S] * 5 + [Q] * 4 + [S] * 5 + [Q] * 5)
    assert events == [(2, EndpointEvent.SPEECH_STARTED), (18, EndpointEvent.UTTERANCE_ENDED)]
    assert ep.speech_seconds == pytest.approx(1.4)


def test_short_noises_are_ignored() -> None:
    # clicks of one and two frames (shorter than 0.3 s) between silences, then nothing until the timeout
    ep, events = _run([Q, S, Q, Q, S, S, Q, Q, Q, S, Q] + [Q] * 20)
    assert events == [(19, EndpointEvent.TIMEOUT)]
    assert not ep.in_speech


def test_a_noise_does_not_shift_the_start_of_later_speech() -> None:
    ep, events = _run([S, S, Q, Q, Q, S, S, S, S, Q, Q, Q, Q, Q])
    assert events[0] == (7, EndpointEvent.SPEECH_STARTED)
    assert ep.speech_start_frame == 5


def test_wavering_probability_keeps_speech_going_but_not_silence() -> None:
    # 0.4 is under the threshold but within the hysteresis: speech continues through it...
    ep, events = _run([S] * 4 + [0.4] * 6 + [Q] * 5)
    assert events == [(2, EndpointEvent.SPEECH_STARTED), (14, EndpointEvent.UTTERANCE_ENDED)]
    assert ep.last_speech_frame == 9
    # ...but once silence has begun, 0.4 does not count as speech again.
    ep, events = _run([S] * 4 + [Q, 0.4, 0.4, 0.4, 0.4])
    assert events == [(2, EndpointEvent.SPEECH_STARTED), (8, EndpointEvent.UTTERANCE_ENDED)]
    assert ep.last_speech_frame == 3


def test_max_utterance_cuts_a_caller_who_keeps_talking() -> None:
    ep, events = _run([Q] * 2 + [S] * 100)
    assert events == [(4, EndpointEvent.SPEECH_STARTED), (31, EndpointEvent.UTTERANCE_ENDED)]
    assert ep.speech_seconds == pytest.approx(3.0)
    assert ep.endpoint_delay_seconds == pytest.approx(0.0)


def test_no_speech_times_out_once() -> None:
    ep, events = _run([Q] * 50)
    assert events == [(19, EndpointEvent.TIMEOUT)]
    assert ep.done


def test_threshold_is_the_configured_one() -> None:
    strict = VADConfig(threshold=0.95, min_speech_seconds=0.1, no_speech_timeout_seconds=1.0)
    _, events = _run([S] * 20, strict)
    assert events == [(9, EndpointEvent.TIMEOUT)]


def test_nothing_after_the_decision() -> None:
    ep, _ = _run([S] * 5 + [Q] * 5)
    assert ep.done
    assert ep.process(S) is EndpointEvent.NONE


# --- with a turn detector: asked after 0.2 s of silence, the verdict fed back as a value

TURN = SmartTurnConfig(check_after_silence_seconds=0.2, max_silence_seconds=1.0)


def _run_with_verdicts(
    probs: list[float], verdicts: list[bool | None], cfg: VADConfig = CFG
) -> tuple[Endpointer, list[tuple[int, EndpointEvent]]]:
    """Drive the endpointer like listen() does: each TURN_CHECK is answered with the next verdict."""
    ep = Endpointer(cfg, FRAME, TURN)
    answers = iter(verdicts)
    events = []
    for i, p in enumerate(probs):
        event = ep.process(p)
        if event is EndpointEvent.TURN_CHECK:
            events.append((i, event))
            event = ep.turn_verdict(next(answers))
        if event is not EndpointEvent.NONE:
            events.append((i, event))
    return ep, events


def test_a_finished_turn_ends_after_the_short_silence() -> None:
    ep, events = _run_with_verdicts([S] * 10 + [Q] * 8, [True])
    # last speech frame 9; asked after 2 quiet frames (0.2 s) and ended there, not after 0.5 s
    assert events[1:] == [(11, EndpointEvent.TURN_CHECK), (11, EndpointEvent.UTTERANCE_ENDED)]
    assert ep.endpoint_delay_seconds == pytest.approx(0.2)
    assert ep.ended_by == "model"


def test_a_mid_sentence_pause_judged_unfinished_does_not_end_the_turn() -> None:
    # speech, a 0.6 s pause (longer than the 0.5 s silence rule), more speech, then a finished end
    ep, events = _run_with_verdicts([S] * 10 + [Q] * 6 + [S] * 5 + [Q] * 5, [False, True])
    assert events[1:] == [
        (11, EndpointEvent.TURN_CHECK),
        (22, EndpointEvent.TURN_CHECK),
        (22, EndpointEvent.UTTERANCE_ENDED),
    ]
    assert ep.speech_seconds == pytest.approx(2.1)
    assert ep.ended_by == "model"


def test_unfinished_then_silence_ends_at_the_ceiling() -> None:
    ep, events = _run_with_verdicts([S] * 10 + [Q] * 20, [False])
    assert events[1:] == [(11, EndpointEvent.TURN_CHECK), (19, EndpointEvent.UTTERANCE_ENDED)]
    assert ep.endpoint_delay_seconds == pytest.approx(1.0)
    assert ep.ended_by == "silence"


def test_no_answer_from_the_model_falls_back_to_the_trailing_silence() -> None:
    ep, events = _run_with_verdicts([S] * 10 + [Q] * 20, [None])
    assert events[1:] == [(11, EndpointEvent.TURN_CHECK), (14, EndpointEvent.UTTERANCE_ENDED)]
    assert ep.endpoint_delay_seconds == pytest.approx(0.5)


def test_without_a_detector_the_silence_rule_is_unchanged() -> None:
    ep, events = _run([S] * 10 + [Q] * 8)
    assert events == [(2, EndpointEvent.SPEECH_STARTED), (14, EndpointEvent.UTTERANCE_ENDED)]
    assert ep.ended_by == "silence"


def test_a_candidate_end_under_the_silence_rule_marks_each_short_silence_and_ends_nothing() -> None:
    """For speculative transcription: 0.2 s into each silence, while the 0.5 s rule still decides."""
    ep = Endpointer(CFG, FRAME, None, candidate_after_seconds=0.2)
    probs = [S] * 10 + [Q] * 3 + [S] * 4 + [Q] * 8
    events = [(i, e) for i, p in enumerate(probs) if (e := ep.process(p)) is not EndpointEvent.NONE]
    assert events == [
        (2, EndpointEvent.SPEECH_STARTED),
        (11, EndpointEvent.CANDIDATE_END),
        (18, EndpointEvent.CANDIDATE_END),
        (21, EndpointEvent.UTTERANCE_ENDED),
    ]
    assert ep.ended_by == "silence"


def test_with_smart_turn_speculation_can_start_at_the_first_silent_frame() -> None:
    """pi.stt.speculate_after_silence_seconds: Whisper's candidate end comes before Smart Turn is asked."""
    ep = Endpointer(CFG, FRAME, TURN, candidate_after_seconds=0.1)
    events = []
    for i, p in enumerate([S] * 10 + [Q] * 4):
        event = ep.process(p)
        if event is EndpointEvent.TURN_CHECK:
            event = ep.turn_verdict(True)
        if event is not EndpointEvent.NONE:
            events.append((i, event))
    assert events == [
        (2, EndpointEvent.SPEECH_STARTED),
        (10, EndpointEvent.CANDIDATE_END),
        (11, EndpointEvent.UTTERANCE_ENDED),
    ]
    assert ep.ended_by == "model"
