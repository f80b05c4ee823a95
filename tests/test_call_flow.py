"""The call state machine, driven with plain values: what the caller hears next in each situation."""

from __future__ import annotations

import pytest

from pi_client.call.machine import (
    Ask,
    CallPolicy,
    CheckHealth,
    Connect,
    DigitDialed,
    EndKey,
    Heard,
    Hush,
    Intercept,
    Lifted,
    Listen,
    NoSpeech,
    NumberDialed,
    NumberUnknown,
    Outcome,
    Phrase,
    Played,
    PlayTone,
    PutDown,
    ReplyFinished,
    Say,
    State,
    StopAll,
    ToneEnded,
    Transcribe,
    Transcribed,
    is_farewell,
    next_state,
)

PCM = b"\x01\x00" * 8


DIALING = CallPolicy(dialing=True, off_hook_warning_seconds=30.0)
"""A phone with a directory."""


PLAIN = CallPolicy()


def run(events: list, state: State = State.ON_HOOK, policy: CallPolicy = PLAIN) -> tuple[State, list]:
    """Feed events in order; return the final state and every action, in order."""
    actions: list = []
    for event in events:
        state, new = next_state(state, event, policy)
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


def test_noise_goes_back_to_listening() -> None:
    assert next_state(State.TRANSCRIBING, Transcribed("  ")) == (State.LISTENING, [Listen()])


def test_a_quiet_spell_asks_are_you_still_there_and_an_answer_carries_on() -> None:
    state, actions = run([NoSpeech(), Played(), Heard(PCM, True)], State.LISTENING)
    assert actions == [Say(Phrase.STILL_THERE), Listen(), Transcribe(PCM)]
    assert state is State.TRANSCRIBING


def test_silence_after_are_you_still_there_ends_the_call_with_the_busy_tone_then_the_howler() -> None:
    state, actions = run([NoSpeech(), Played(), NoSpeech()], State.LISTENING, DIALING)
    assert (state, actions[-1]) == (State.ENDED, PlayTone("busy", 30.0))
    assert next_state(state, ToneEnded(), DIALING) == (State.OFF_HOOK_WARNING, [PlayTone("off_hook")])
    assert next_state(State.OFF_HOOK_WARNING, PutDown()) == (State.ON_HOOK, [StopAll()])


def test_failed_stt_asks_the_caller_to_repeat() -> None:
    assert next_state(State.TRANSCRIBING, Transcribed("", ok=False)) == (State.APOLOGIZING, [Say(Phrase.BROKEN)])


def test_a_recording_the_server_found_no_words_in_goes_back_to_listening() -> None:
    event = ReplyFinished(Ask(pcm=PCM), Outcome.NOTHING_HEARD)
    assert next_state(State.REPLYING, event) == (State.LISTENING, [Listen()])


# --------------------------------------------------------------------------- dialing (a directory is configured)


def test_without_a_directory_lifting_greets_at_once() -> None:
    assert next_state(State.ON_HOOK, Lifted())[1] == [CheckHealth(), Say(Phrase.GREETING)]


def test_with_a_directory_lifting_gives_the_dial_tone_until_the_first_digit() -> None:
    state, actions = run([Lifted(), DigitDialed()], policy=DIALING)
    assert state is State.DIALING
    assert actions == [CheckHealth(), PlayTone("dial", 30.0), Hush()]


def test_a_known_number_connects_to_its_character_then_listens() -> None:
    state, actions = run([Lifted(), DigitDialed(), NumberDialed("7", "luna"), Played()], policy=DIALING)
    assert actions[-2:] == [Connect("luna"), Listen()]
    assert state is State.LISTENING


def test_an_unknown_number_gets_the_intercept_then_the_reorder_tone() -> None:
    state, actions = run([Lifted(), DigitDialed(), NumberDialed("9", None), Played()], policy=DIALING)
    assert actions[-2:] == [Intercept(), PlayTone("reorder", 30.0)]
    assert state is State.ENDED


def test_a_character_the_server_does_not_know_is_not_in_service_either() -> None:
    state, actions = run([NumberUnknown(), Played()], State.CONNECTING, DIALING)
    assert actions == [Intercept(), PlayTone("reorder", 30.0)]


def test_no_digit_for_long_gives_the_off_hook_warning() -> None:
    state, actions = run([Lifted(), ToneEnded()], policy=DIALING)
    assert (state, actions[-1]) == (State.OFF_HOOK_WARNING, PlayTone("off_hook"))


@pytest.mark.parametrize("state", [State.DIALING, State.CONNECTING, State.NOT_IN_SERVICE, State.ENDED])
def test_hanging_up_while_dialing_or_hearing_tones_stops_them(state: State) -> None:
    assert next_state(state, PutDown(), DIALING) == (State.ON_HOOK, [StopAll()])


@pytest.mark.parametrize("state", [State.LISTENING, State.REPLYING, State.GREETING, State.STILL_THERE])
def test_dialing_during_a_call_stops_it_and_calls_the_new_number(state: State) -> None:
    state, actions = run([DigitDialed(), NumberDialed("0", "operator")], state, DIALING)
    assert (state, actions) == (State.CONNECTING, [Hush(), Connect("operator")])


def test_digits_after_the_call_ended_are_ignored() -> None:
    for state in (State.ENDED, State.OFF_HOOK_WARNING, State.NOT_IN_SERVICE):
        assert next_state(state, DigitDialed(), DIALING) == (state, [])


# --------------------------------------------------------------------------- goodbye


@pytest.mark.parametrize(
    ("said", "farewell"),
    [
        ("OK, thank you. Goodbye!", True),
        ("bye bye", True),
        ("Thanks, talk to you later.", True),
        ("I have to hang up now, bye.", True),
        ("I said bye to my friend and then we went home", False),
        ("Who is the goodbye girl?", False),
        ("", False),
    ],
)
def test_a_goodbye_is_the_end_of_the_utterance(said: str, farewell: bool) -> None:
    assert is_farewell(said) is farewell


def test_after_a_goodbye_the_reply_plays_then_the_busy_tone() -> None:
    event = ReplyFinished(Ask(text="bye"), Outcome.DONE, farewell=True)
    assert next_state(State.REPLYING, event, DIALING) == (State.ENDED, [PlayTone("busy", 30.0)])
    failed = ReplyFinished(Ask(text="bye"), Outcome.UNREACHABLE, farewell=True)
    assert next_state(State.REPLYING, failed, DIALING) == (State.APOLOGIZING, [Say(Phrase.OFFLINE)])


# --------------------------------------------------------------------------- the far side ends the call


def test_the_character_hanging_up_plays_its_reply_then_the_busy_tone() -> None:
    event = ReplyFinished(Ask(text="that's all"), Outcome.DONE, hung_up=True)
    assert next_state(State.REPLYING, event, DIALING) == (State.ENDED, [PlayTone("busy", 30.0)])


def test_a_reply_that_broke_off_with_no_server_left_is_a_dropped_call_with_the_reorder_tone() -> None:
    dropped = ReplyFinished(Ask(text="hi"), Outcome.BROKEN, line_dropped=True)
    assert next_state(State.REPLYING, dropped, DIALING) == (State.ENDED, [PlayTone("reorder", 30.0)])
    hiccup = ReplyFinished(Ask(text="hi"), Outcome.BROKEN)  # a server still answers: the call goes on
    assert next_state(State.REPLYING, hiccup, DIALING) == (State.APOLOGIZING, [Say(Phrase.BROKEN)])


@pytest.mark.parametrize("state", [State.LISTENING, State.REPLYING, State.GREETING, State.CONNECTING])
def test_the_end_key_during_a_call_stops_it_and_gives_the_busy_tone(state: State) -> None:
    assert next_state(state, EndKey(), DIALING) == (State.ENDED, [StopAll(), PlayTone("busy", 30.0)])
    assert next_state(State.DIALING, EndKey(), DIALING) == (State.DIALING, [])  # at the dial tone: nothing
