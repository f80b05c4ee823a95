"""The call state machine: what the phone does next, decided from plain values (no clock, no I/O).

The asyncio runner in :mod:`pi_client.call.runner` executes the actions and turns their results into
the next events. Hang-up (``PutDown``) from any state yields ``StopAll``: the runner cancels the
one task in flight (capture, STT, request or playback) and kills playback.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pi_client.telephone.tones import ToneName


class State(enum.Enum):
    """Where the call is."""

    ON_HOOK = "on-hook"
    GREETING = "greeting"
    LISTENING = "listening"
    TRANSCRIBING = "transcribing"
    REPLYING = "replying"
    APOLOGIZING = "apologizing"
    DIALING = "dialing"
    """Dial tone until the first digit, then collecting the number (only with a directory)."""
    CONNECTING = "connecting"
    """Ringback while the greeting of the character dialed is fetched, then the greeting."""
    NOT_IN_SERVICE = "not-in-service"
    """Special-information tones and the intercept message for a number nobody answers."""
    STILL_THERE = "still-there"
    """A quiet spell: the phone asks whether the caller is still there."""
    LAST_CHANCE = "last-chance"
    """Listening once more after "Are you still there?"; silence again ends the call."""
    ENDED = "ended"
    """The far side has gone: busy or reorder tone until the handset is put down."""
    OFF_HOOK_WARNING = "off-hook-warning"
    """The handset was left off the hook too long: the howler until it is put down."""


class Outcome(enum.Enum):
    """How one request to the server ended."""

    DONE = "done"
    """The whole reply streamed and played."""
    BROKEN = "broken"
    """Some audio played, then the stream broke off."""
    UNREACHABLE = "unreachable"
    """No connection, a 5xx, or not our protocol."""
    NO_AUDIO = "no-audio"
    """Connected, but no audio within first_audio_timeout_seconds."""
    REJECTED = "rejected"
    """The server refused the request (4xx)."""
    BUSY = "busy"
    """503: the server's voice queue is full."""
    NOTHING_HEARD = "nothing-heard"
    """/process-audio found no words in the recording (a noise): just listen again."""
    INTERRUPTED = "interrupted"
    """The caller talked over the reply: playback cut, the request closed (barge-in)."""


class Phrase(enum.Enum):
    """What the phone says in its own voice."""

    GREETING = "greeting"
    OFFLINE = "offline"
    BROKEN = "broken"
    NOT_IN_SERVICE = "not-in-service"
    STILL_THERE = "still-there"


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Lifted:
    """The handset left the cradle."""


@dataclass(frozen=True)
class Answered:
    """The handset left the cradle while a call from the server rang: the character speaks first."""

    call_id: str
    character: str


@dataclass(frozen=True)
class PutDown:
    """The handset is back on the cradle."""


@dataclass(frozen=True)
class Played:
    """A phrase in the phone's own voice (greeting, apology) has been played."""


@dataclass(frozen=True)
class Heard:
    """The caller spoke and stopped; ``server_up`` is the health monitor's belief (None: unknown)."""

    pcm: bytes = field(repr=False)
    server_up: bool | None = None


@dataclass(frozen=True)
class NoSpeech:
    """Listening timed out without speech (or the input ended)."""


@dataclass(frozen=True)
class Transcribed:
    """STT finished; ``ok`` False when it failed (the caller is asked to repeat)."""

    text: str
    ok: bool = True


@dataclass(frozen=True)
class Ask:
    """Action: send a turn (text, or the recording for /process-audio) and play the reply as it streams."""

    text: str | None = None
    pcm: bytes | None = field(default=None, repr=False)
    attempt: int = 0
    delay_seconds: float = 0.0
    """Wait this long before sending (a retry after 503)."""
    call_id: str | None = None
    """An answered call from the server: no words to send, the character speaks first."""


@dataclass(frozen=True)
class ReplyFinished:
    """The request for ``ask`` ended with ``outcome``; ``retry_after`` from a 503."""

    ask: Ask
    outcome: Outcome
    retry_after: float | None = None
    farewell: bool = False
    """The caller said goodbye in this turn (see :func:`is_farewell`): the call ends after the reply."""
    hung_up: bool = False
    """The character ended the call in this reply (the server's ``call_ended``): busy tone after it."""
    line_dropped: bool = False
    """The reply broke off and no server answers any more: the reorder tone, as for a dropped call."""


@dataclass(frozen=True)
class DigitDialed:
    """The first digit of a number was dialed (rotary or touch-tone): the dial tone stops."""


@dataclass(frozen=True)
class NumberDialed:
    """A complete number; ``character`` is who it reaches, None when it is not in the directory."""

    number: str
    character: str | None


@dataclass(frozen=True)
class EndKey:
    """The caller dialed the end-of-call key (``pi.dial.end_call_key``, ``*``) during a call."""


@dataclass(frozen=True)
class NumberUnknown:
    """The server does not know the character the number reaches."""


@dataclass(frozen=True)
class ToneEnded:
    """A tone played for its set time (or, played once, to its end)."""


@dataclass(frozen=True)
class BargeIn:
    """The caller talked long enough while the phone held the turn; ``heard_seconds`` of the playback had played."""

    heard_seconds: float
    playing: bool = True
    """Something was playing; False: the phone was still thinking (transcribing, waiting for the reply)."""


Event = (
    Lifted
    | Answered
    | PutDown
    | Played
    | Heard
    | NoSpeech
    | Transcribed
    | ReplyFinished
    | DigitDialed
    | NumberDialed
    | NumberUnknown
    | ToneEnded
    | BargeIn
    | EndKey
)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class StopAll:
    """Cancel whatever runs (capture, STT, request, playback) and forget the session."""


@dataclass(frozen=True)
class CheckHealth:
    """Ask the health monitor to check now (the answer is needed within seconds)."""


@dataclass(frozen=True)
class Say:
    """Play a phrase in the phone's own voice."""

    phrase: Phrase


@dataclass(frozen=True)
class Listen:
    """Capture until the caller stops talking."""


@dataclass(frozen=True)
class Transcribe:
    """Run STT on the utterance."""

    pcm: bytes = field(repr=False)


@dataclass(frozen=True)
class PlayTone:
    """Play a call-progress tone for ``seconds`` (None: until something else happens)."""

    name: ToneName
    seconds: float | None = None


@dataclass(frozen=True)
class Hush:
    """Stop the sound in progress (the dial tone at the first digit); the call goes on."""


@dataclass(frozen=True)
class Connect:
    """Ringback while the character's greeting is fetched, cut when it is ready; then the greeting."""

    character: str


@dataclass(frozen=True)
class Intercept:
    """Special-information tones, then "the number you have dialed is not in service"."""


@dataclass(frozen=True)
class StopPlayback:
    """Barge-in: cut the playback and close the request in flight; the listener goes on hearing the caller."""

    heard_seconds: float
    went_on: bool = False
    """Nothing of the reply had played: the caller went on talking, the utterance so far stays in the turn."""


Action = StopPlayback | StopAll | CheckHealth | Say | Listen | Transcribe | Ask | PlayTone | Hush | Connect | Intercept


@dataclass(frozen=True)
class CallPolicy:
    """The settings the decisions depend on."""

    use_server_stt: bool = False
    """Send the recording to /process-audio instead of transcribing locally."""
    busy_retry_max_seconds: float = 5.0
    """A 503 whose Retry-After is at most this is retried once; longer waits get the offline voice."""
    dialing: bool = False
    """A directory is configured: lifting gives the dial tone and the number picks the character."""
    off_hook_warning_seconds: float = 30.0
    """Dial, busy or reorder tone this long, then the off-hook warning, in seconds."""


def next_state(state: State, event: Event, policy: CallPolicy = CallPolicy()) -> tuple[State, list[Action]]:
    """The call's next state and the actions that get it there."""
    if isinstance(event, PutDown):
        return (State.ON_HOOK, []) if state is State.ON_HOOK else (State.ON_HOOK, [StopAll()])
    if isinstance(event, Lifted):
        if state is State.ON_HOOK and policy.dialing:
            return State.DIALING, [CheckHealth(), PlayTone("dial", policy.off_hook_warning_seconds)]
        if state is State.ON_HOOK:
            return State.GREETING, [CheckHealth(), Say(Phrase.GREETING)]
        return state, []
    if isinstance(event, BargeIn):
        return _barged_in(state, event)
    if isinstance(event, Answered):
        if state is State.ON_HOOK:
            return State.REPLYING, [CheckHealth(), Ask(call_id=event.call_id)]
        return state, []
    transition = _TRANSITIONS.get((state, type(event)))
    if transition is None:
        return state, []  # a late result from work the call no longer waits for
    return transition(event, policy)


def _played_greeting(_event: Event, _policy: CallPolicy) -> tuple[State, list[Action]]:
    return State.LISTENING, [Listen()]


def _heard(event: Event, policy: CallPolicy) -> tuple[State, list[Action]]:
    assert isinstance(event, Heard)
    if event.server_up is False:
        # Known down: answer at once rather than after a connect timeout of silence.
        return State.APOLOGIZING, [Say(Phrase.OFFLINE)]
    if policy.use_server_stt:
        return State.REPLYING, [Ask(pcm=event.pcm)]
    return State.TRANSCRIBING, [Transcribe(event.pcm)]


def _no_speech(_event: Event, _policy: CallPolicy) -> tuple[State, list[Action]]:
    return State.STILL_THERE, [Say(Phrase.STILL_THERE)]


def _asked_still_there(_event: Event, _policy: CallPolicy) -> tuple[State, list[Action]]:
    return State.LAST_CHANCE, [Listen()]


def _silent_again(_event: Event, policy: CallPolicy) -> tuple[State, list[Action]]:
    return State.ENDED, [PlayTone("busy", policy.off_hook_warning_seconds)]


def _first_digit(_event: Event, _policy: CallPolicy) -> tuple[State, list[Action]]:
    return State.DIALING, [Hush()]


IN_CALL = frozenset(
    {
        State.GREETING,
        State.CONNECTING,
        State.LISTENING,
        State.TRANSCRIBING,
        State.REPLYING,
        State.APOLOGIZING,
        State.STILL_THERE,
        State.LAST_CHANCE,
    }
)
"""States where dialing a new number (with a directory) leaves this character for another."""


def _redial(_event: Event, _policy: CallPolicy) -> tuple[State, list[Action]]:
    return State.DIALING, [Hush()]


def _end_key(_event: Event, policy: CallPolicy) -> tuple[State, list[Action]]:
    return State.ENDED, [StopAll(), PlayTone("busy", policy.off_hook_warning_seconds)]


def _number_dialed(event: Event, _policy: CallPolicy) -> tuple[State, list[Action]]:
    assert isinstance(event, NumberDialed)
    if event.character is None:
        return State.NOT_IN_SERVICE, [Intercept()]
    return State.CONNECTING, [Connect(event.character)]


def _not_in_service(_event: Event, _policy: CallPolicy) -> tuple[State, list[Action]]:
    return State.NOT_IN_SERVICE, [Intercept()]


def _intercepted(_event: Event, policy: CallPolicy) -> tuple[State, list[Action]]:
    return State.ENDED, [PlayTone("reorder", policy.off_hook_warning_seconds)]


def _left_off_hook(_event: Event, _policy: CallPolicy) -> tuple[State, list[Action]]:
    return State.OFF_HOOK_WARNING, [PlayTone("off_hook")]


def _transcribed(event: Event, _policy: CallPolicy) -> tuple[State, list[Action]]:
    assert isinstance(event, Transcribed)
    if not event.ok:
        return State.APOLOGIZING, [Say(Phrase.BROKEN)]
    if not event.text.strip():
        return State.LISTENING, [Listen()]  # a noise Whisper found no words in
    return State.REPLYING, [Ask(text=event.text.strip())]


_FAREWELL = re.compile(
    r"\b(good[ -]?bye|bye(?:[ -]bye)?|farewell|see you(?: later| soon)?|talk (?:to you )?later|hang(?:ing)? up)\W*$"
)


def is_farewell(transcript: str | None) -> bool:
    """The caller ended the utterance with a goodbye ("OK, thanks, bye!"); a bye mid-sentence does not count."""
    return transcript is not None and _FAREWELL.search(transcript.strip().lower()) is not None


def _reply_finished(event: Event, policy: CallPolicy) -> tuple[State, list[Action]]:
    assert isinstance(event, ReplyFinished)
    if event.line_dropped:
        return State.ENDED, [PlayTone("reorder", policy.off_hook_warning_seconds)]
    if (event.farewell or event.hung_up) and event.outcome in (Outcome.DONE, Outcome.BROKEN):
        return State.ENDED, [PlayTone("busy", policy.off_hook_warning_seconds)]
    if event.outcome in (Outcome.DONE, Outcome.NOTHING_HEARD):
        return State.LISTENING, [Listen()]
    if event.outcome is Outcome.BROKEN:
        return State.APOLOGIZING, [Say(Phrase.BROKEN)]
    if will_retry(event, policy):
        assert event.retry_after is not None
        return State.REPLYING, [replace(event.ask, attempt=1, delay_seconds=event.retry_after)]
    return State.APOLOGIZING, [Say(Phrase.OFFLINE)]


def will_retry(event: ReplyFinished, policy: CallPolicy) -> bool:
    """A 503 is retried once, and only when the server asks for a short wait."""
    return (
        event.outcome is Outcome.BUSY
        and event.ask.attempt == 0
        and event.retry_after is not None
        and 0 <= event.retry_after <= policy.busy_retry_max_seconds
    )


def _apologized(_event: Event, _policy: CallPolicy) -> tuple[State, list[Action]]:
    return State.LISTENING, [Listen()]


def _barged_in(state: State, event: BargeIn) -> tuple[State, list[Action]]:
    if state not in INTERRUPTIBLE:
        return state, []
    went_on = state in (State.TRANSCRIBING, State.REPLYING) and not event.playing
    return State.LISTENING, [StopPlayback(event.heard_seconds, went_on), Listen()]


INTERRUPTIBLE = frozenset(
    {State.GREETING, State.CONNECTING, State.TRANSCRIBING, State.REPLYING, State.APOLOGIZING, State.STILL_THERE}
)
"""States where the phone holds the turn (talks, or thinks) and the caller may talk over it (barge-in)."""

Transition = Callable[[Event, CallPolicy], tuple[State, list[Action]]]

_TRANSITIONS: dict[tuple[State, type], Transition] = {
    (State.GREETING, Played): _played_greeting,
    (State.LISTENING, Heard): _heard,
    (State.LISTENING, NoSpeech): _no_speech,
    (State.TRANSCRIBING, Transcribed): _transcribed,
    (State.REPLYING, ReplyFinished): _reply_finished,
    (State.APOLOGIZING, Played): _apologized,
    (State.DIALING, DigitDialed): _first_digit,
    (State.DIALING, NumberDialed): _number_dialed,
    (State.DIALING, ToneEnded): _left_off_hook,
    (State.CONNECTING, Played): _played_greeting,
    (State.CONNECTING, NumberUnknown): _not_in_service,
    (State.NOT_IN_SERVICE, Played): _intercepted,
    (State.STILL_THERE, Played): _asked_still_there,
    (State.LAST_CHANCE, Heard): _heard,
    (State.LAST_CHANCE, NoSpeech): _silent_again,
    (State.ENDED, ToneEnded): _left_off_hook,
    **{(state, DigitDialed): _redial for state in IN_CALL},
    **{(state, EndKey): _end_key for state in IN_CALL},
}
