"""The call state machine, driven with plain values: what the caller hears next in each situation."""

from __future__ import annotations

import pytest

from pi_client.call.machine import (
    Ask,
    CallPolicy,
    CheckHealth,
    Heard,
    Lifted,
    Listen,
    NoSpeech,
    Outcome,
    Phrase,
    Played,
    PutDown,
    ReplyFinished,
    Say,
    State,
    StopAll,
    Transcribe,
    Transcribed,
    next_state,
)

PCM = b"\x01\x00" * 8


def run(events: list, state: State = State.ON_HOOK) -> tuple[State, list]:
    """Feed events in order; return the final state and every action, in order."""
    actions: list = []
    for event in events:
        state, new = next_state(state, event)
        actions += new
    return state, actions


def test_a_whole_turn_greets_listens_transcribes_asks_and_listens_again() -> None:
    state, actions = run([Lifted(), Played(), Heard(PCM, True), Transcribed("what time is it")])
    assert state is State.REPLYING
    assert actions == [
        CheckHealth(),
        Say(Phrase.GREETING),
        Listen(),
        Transcribe(PCM),
        Ask(text="what time is it"),
    ]
    state, actions = next_state(state, ReplyFinished(Ask(text="what time is it"), Outcome.DONE))
    assert (state, actions) == (State.LISTENING, [Listen()])


@pytest.mark.parametrize("state", [s for s in State if s is not State.ON_HOOK])
def test_hanging_up_in_any_state_stops_everything(state: State) -> None:
    assert next_state(state, PutDown()) == (State.ON_HOOK, [StopAll()])


def test_events_after_hang_up_are_ignored() -> None:
    late = [Played(), Heard(PCM), NoSpeech(), Transcribed("hi"), ReplyFinished(Ask(text="hi"), Outcome.DONE)]
    for event in late:
        assert next_state(State.ON_HOOK, event) == (State.ON_HOOK, [])
    assert next_state(State.ON_HOOK, PutDown()) == (State.ON_HOOK, [])


def test_a_bouncing_lift_does_not_restart_the_call() -> None:
    assert next_state(State.REPLYING, Lifted()) == (State.REPLYING, [])


def test_known_down_server_gets_the_offline_voice_without_waiting() -> None:
    state, actions = next_state(State.LISTENING, Heard(PCM, server_up=False))
    assert (state, actions) == (State.APOLOGIZING, [Say(Phrase.OFFLINE)])
    assert next_state(state, Played()) == (State.LISTENING, [Listen()])


def test_unknown_server_state_still_tries() -> None:
    assert next_state(State.LISTENING, Heard(PCM, server_up=None))[1] == [Transcribe(PCM)]


def test_server_stt_sends_the_recording_instead_of_transcribing() -> None:
    policy = CallPolicy(use_server_stt=True)
    assert next_state(State.LISTENING, Heard(PCM, True), policy) == (State.REPLYING, [Ask(pcm=PCM)])


@pytest.mark.parametrize(
    ("outcome", "phrase"),
    [
        (Outcome.UNREACHABLE, Phrase.OFFLINE),
        (Outcome.NO_AUDIO, Phrase.OFFLINE),
        (Outcome.REJECTED, Phrase.OFFLINE),
        (Outcome.BROKEN, Phrase.BROKEN),
    ],
)
def test_failures_are_never_silent(outcome: Outcome, phrase: Phrase) -> None:
    state, actions = next_state(State.REPLYING, ReplyFinished(Ask(text="hi"), outcome))
    assert (state, actions) == (State.APOLOGIZING, [Say(phrase)])


def test_busy_with_a_short_retry_after_is_retried_once_then_apologizes() -> None:
    ask = Ask(text="hi")
    policy = CallPolicy(busy_retry_max_seconds=5.0)
    state, actions = next_state(State.REPLYING, ReplyFinished(ask, Outcome.BUSY, retry_after=2.0), policy)
    assert (state, actions) == (State.REPLYING, [Ask(text="hi", attempt=1, delay_seconds=2.0)])
    state, actions = next_state(state, ReplyFinished(actions[0], Outcome.BUSY, retry_after=2.0), policy)
    assert (state, actions) == (State.APOLOGIZING, [Say(Phrase.OFFLINE)])


def test_busy_with_a_long_retry_after_apologizes_at_once() -> None:
    policy = CallPolicy(busy_retry_max_seconds=5.0)
    event = ReplyFinished(Ask(text="hi"), Outcome.BUSY, retry_after=30.0)
    assert next_state(State.REPLYING, event, policy) == (State.APOLOGIZING, [Say(Phrase.OFFLINE)])


def test_silence_prompts_again_and_noise_goes_back_to_listening() -> None:
    assert next_state(State.LISTENING, NoSpeech()) == (State.GREETING, [Say(Phrase.GREETING)])
    assert next_state(State.TRANSCRIBING, Transcribed("  ")) == (State.LISTENING, [Listen()])


def test_failed_stt_asks_the_caller_to_repeat() -> None:
    assert next_state(State.TRANSCRIBING, Transcribed("", ok=False)) == (State.APOLOGIZING, [Say(Phrase.BROKEN)])


def test_a_recording_the_server_found_no_words_in_goes_back_to_listening() -> None:
    event = ReplyFinished(Ask(pcm=PCM), Outcome.NOTHING_HEARD)
    assert next_state(State.REPLYING, event) == (State.LISTENING, [Listen()])
