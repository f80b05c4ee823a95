"""The asyncio runner for the call state machine: one task in flight, hang-up cancels it.

Each action of :func:`pi_client.call.machine.next_state` becomes at most one named task whose result
is the next event. ``StopAll`` cancels that task, kills playback and closes the HTTP response,
so putting the handset down stops everything at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from common.config import PiConfig
from pi_client.audio.capture import BLOCK_SAMPLES, SAMPLE_RATE
from pi_client.audio.offline_voice import OfflineVoice, SpokenPhrase
from pi_client.audio.playback import AudioSink
from pi_client.call.barge_in import OverhearFn, Overhearing
from pi_client.call.dialing import DialSource, KeyAudio, KeyPad, play_tone, ring_until
from pi_client.call.earpiece_hold import EarpieceHold
from pi_client.call.far_end import line_dropped
from pi_client.call.filler import ThinkingFiller
from pi_client.call.machine import (
    IN_CALL,
    Action,
    Answered,
    Ask,
    BargeIn,
    CallPolicy,
    CheckHealth,
    Connect,
    DigitDialed,
    Event,
    Heard,
    Hush,
    Intercept,
    Lifted,
    Listen,
    NoSpeech,
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
    StopPlayback,
    ToneEnded,
    Transcribe,
    Transcribed,
    is_farewell,
    next_state,
    will_retry,
)
from pi_client.call.ringer import Ringer
from pi_client.call.turn_log import REPLY_TEXT_TIMEOUT_SECONDS, Turn, log_turn
from pi_client.server.client import (
    Busy,
    ReplyRequest,
    ServerClient,
    ServerRejected,
    ServerUnavailable,
    StreamBroken,
)
from pi_client.server.fleet import ServerFleet
from pi_client.server.greetings import GreetingCache
from pi_client.server.health import FleetHealth, HealthMonitor
from pi_client.server.heard import report_heard
from pi_client.server.reply_pump import ReplyAudio, ReplyEnd, ReplyHead, ReplyPump

_LOGGER = logging.getLogger(__name__)

_CANCEL_WAIT_SECONDS = 5.0
"""On hang-up, how long the cancelled stage may take to unwind before the phone is idle again, in seconds."""
_LISTEN_RETRY_SECONDS = 2.0
"""Pause after the microphone failed before the call listens again (a dead input device must not
spin the call loop), in seconds."""
_TURNS_KEPT = 20
"""Finished turns kept in ``Phone.turns`` (each one is also logged as it ends)."""
_FILE_MODE_END_TONE_SECONDS = 2.0
"""File mode: how much of the busy or reorder tone ends the file when the call ends, in seconds."""
_PLAY_BLOCK_SECONDS = 0.25
"""Local phrases go to the sink in blocks this long, so a hang-up cancels between blocks, in seconds."""


class HeardUtterance(Protocol):
    """What endpointing hands over (pi_client.turns.endpoint.Utterance)."""

    pcm: bytes
    speech_seconds: float
    endpoint_delay_seconds: float


class Microphone(Protocol):
    """The call's shared microphone (pi_client.audio.microphone.CallMicrophone)."""

    def release(self) -> None: ...


class HookSource(Protocol):
    """The hook switch (pi_client.telephone.hook): puts HookEvent values on a queue."""

    def start(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None: ...

    def close(self) -> None: ...


ListenFn = Callable[[], Awaitable[HeardUtterance | None]]
TranscribeFn = Callable[[bytes], str]


class Phone:
    """Runs calls: hook events in, the caller's ears (an AudioSink) out."""

    def __init__(
        self,
        *,
        settings: PiConfig,
        listen: ListenFn,
        transcribe: TranscribeFn | None,
        client: ServerClient | ServerFleet,
        voice: OfflineVoice,
        sink: AudioSink,
        monitor: HealthMonitor | FleetHealth | None = None,
        policy: CallPolicy | None = None,
        dial: DialSource | None = None,
        key_audio: Callable[[], KeyAudio] | None = None,
        overhear: OverhearFn | None = None,
        microphone: Microphone | None = None,
        ringer: Ringer | None = None,
    ) -> None:
        """``dial`` is the rotary dial, ``key_audio`` opens the microphone for touch tones while dialing,
        ``ringer`` rings for calls the server places (lifting the handset then answers them).

        ``overhear`` is a listen that reports every frame (on the shared, echo-cancelled microphone):
        with it the phone listens while it plays and the caller can interrupt (pi.turns.barge_in).
        ``microphone`` is that shared microphone: hang-up releases it at once.
        """
        from pi_client.telephone.directory import Directory, check_end_key

        self._directory = Directory(settings.directory)  # ConfigError naming pi.directory
        check_end_key(settings.dial.end_call_key)
        self._settings = settings
        self._listen_fn = listen
        self._transcribe_fn = transcribe
        self._client = client
        self._voice = voice
        self._sink = sink
        self._monitor = monitor
        self._policy = policy or CallPolicy(
            use_server_stt=settings.stt.use_server or transcribe is None,
            busy_retry_max_seconds=settings.client.busy_retry_max_seconds,
            dialing=bool(self._directory),
            off_hook_warning_seconds=settings.tones.off_hook_warning_seconds,
        )
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._dial = dial
        self._keypad = KeyPad(
            self._directory,
            settings.dial.digit_timeout_seconds,
            self._events.put_nowait,
            key_audio if settings.dial.dtmf else None,
        )
        self._greetings = GreetingCache(client, settings.cache_dir)
        self._filler: ThinkingFiller | None = None
        if settings.filler.enabled:  # the earpiece through the filler's sink, so a reply can queue behind it
            self._filler = ThinkingFiller(GreetingCache(client, settings.cache_dir, "filler"), settings.filler, sink)
            self._sink = self._filler.sink
        self._end_key = settings.dial.end_call_key or None
        self._keys: asyncio.Queue[str] = asyncio.Queue()
        self._character: str | None = None
        """Who this call reaches (dialed); None: the configured default."""
        self.state = State.ON_HOOK
        self._task: asyncio.Task[None] | None = None
        self._session_id: str | None = None
        self._turn: Turn | None = None
        self.turns: deque[Turn] = deque(maxlen=_TURNS_KEPT)
        """The latest finished turns, newest last (file mode reads the one turn it ran)."""
        self._log_tasks: set[asyncio.Task[None]] = set()
        self._hold = EarpieceHold(settings.turns.barge_in, lambda: self._sink)
        self._overhearing = (
            Overhearing(
                overhear,
                settings.turns.barge_in,
                lambda: self._sink.played_seconds,
                self._events.put_nowait,
                self._hold,
            )
            if overhear is not None
            else None
        )
        self._microphone = microphone
        self._ringer = ringer
        self._reply_turn: Turn | None = None
        """The turn whose reply is playing (a barge-in notes on it what was heard)."""
        self._last_pcm = b""
        """The latest utterance; kept so that, if the caller goes on before any reply plays, both make one turn."""
        self._carry = b""
        """Audio to put before the next utterance (the caller went on talking)."""
        self._caller_quiet = asyncio.Event()
        """The caller has been silent pi.turns.reply_after_silence_seconds (:meth:`caller_voice`)."""
        self._quiet_frames = 0
        self._quiet_enough = round(settings.turns.reply_after_silence_seconds * SAMPLE_RATE / BLOCK_SAMPLES)
        self._frames_reported = False
        """The listener reports its frames (python -m pi_client wires it; without it no reply waits)."""
        self._reply_playing = False
        """The current reply's first audio has gone to the earpiece."""
        self._went_on = False
        """The caller's going on was reported for this turn (once)."""

    @property
    def idle(self) -> bool:
        """Nothing plays and nobody talks: the phone only waits (whole-call file mode hangs up then)."""
        waiting = self.state in (State.LISTENING, State.LAST_CHANCE, State.ENDED, State.OFF_HOOK_WARNING)
        hearing = self._overhearing is not None and (self._overhearing.caller_speaking or self._overhearing.busy)
        return (waiting or self.state in (State.ON_HOOK, State.DIALING)) and not hearing

    # ------------------------------------------------------------------ driving

    async def run(self, hook: HookSource) -> None:
        """Answer calls until cancelled."""
        hook_events: asyncio.Queue[Any] = asyncio.Queue()
        hook.start(asyncio.get_running_loop(), hook_events)
        forward = asyncio.create_task(self._forward_hook(hook_events), name="hook")
        dialed = asyncio.create_task(self._forward_keys(self._keys), name="dial")
        if self._dial is not None:
            self._dial.start(asyncio.get_running_loop(), self._keys)
        if self._ringer is not None:
            self._ringer.start()
        try:
            while True:
                await self._step(await self._events.get())
        finally:
            forward.cancel()
            dialed.cancel()
            self._keypad.end()
            await self._execute(StopAll())
            hook.close()
            if self._dial is not None:
                self._dial.close()
            if self._ringer is not None:
                await self._ringer.close()
            await self.drain_logs()

    async def dial(self, number: str) -> bool:
        """File mode: dial ``number`` as a rotary dial would (no tones); False (after the intercept) if unknown."""
        dialed = self._directory.lookup(number)
        _LOGGER.info("number %s: %s", number, dialed.character or "not in service")
        if dialed.character is None:
            await self._intercept()
            return False
        self._character = dialed.character
        return True

    async def run_one_turn(self) -> Turn | None:
        """File mode: listen once, answer, and return when the phone would listen again."""
        self.state = State.LISTENING
        await self._execute(Listen())
        try:
            while True:
                event = await self._events.get()
                if isinstance(event, NoSpeech):
                    return None
                self.state, actions = next_state(self.state, event, self._policy)
                if any(isinstance(a, Listen) or a == Say(Phrase.GREETING) for a in actions):
                    break
                if self.state is State.ENDED:  # goodbye, the character hung up, a dropped line: its tone, briefly
                    for tone in (a for a in actions if isinstance(a, PlayTone)):
                        await play_tone(self._sink, self._settings.tones, tone.name, _FILE_MODE_END_TONE_SECONDS)
                    break
                for action in actions:
                    await self._execute(action)
        finally:
            await self._execute(StopAll())
            await self.drain_logs()
        return self.turns[-1] if self.turns else None

    def caller_voice(self, voice: bool, confirmed: bool = False) -> None:
        """The listener's verdict on each frame (speech or not; ``confirmed``: speech long enough to count): a
        reply's first audio waits for the caller's silence (:meth:`_hold_first_audio`), counted in frames (on
        the call's clock). Confirmed speech before any of the reply played is the caller going on, however
        short ("Thank you, ... bye"): the request is dropped and the utterance continues."""
        self._frames_reported = True
        hearing = self._overhearing
        before_reply = self.state in (State.TRANSCRIBING, State.REPLYING) and not self._reply_playing
        held = hearing is not None and hearing.busy and not hearing.playing and before_reply
        if confirmed and held and not self._went_on:
            self._went_on = True
            self._events.put_nowait(BargeIn(0.0, playing=False))
        self._quiet_frames = 0 if voice else self._quiet_frames + 1
        if self._quiet_frames >= self._quiet_enough:
            self._caller_quiet.set()
        else:
            self._caller_quiet.clear()

    def key_heard(self, key: str) -> None:
        """A touch-tone key heard in the call's audio (pi_client.telephone.key_tap): dialed like the dial's."""
        self._keys.put_nowait(key)

    async def _forward_hook(self, hook_events: asyncio.Queue[Any]) -> None:
        from pi_client.telephone.hook import HookEvent

        while True:
            event = await hook_events.get()
            await self._events.put(self._ring_event(event == HookEvent.LIFTED))

    def _ring_event(self, lifted: bool) -> Event:
        """The hook event as the call sees it: lifting while the bell rings answers the call."""
        if self._ringer is None:
            return Lifted() if lifted else PutDown()
        if not lifted:
            self._ringer.put_down()
            return PutDown()
        call = self._ringer.lifted()
        return Lifted() if call is None else Answered(call.call_id, call.character)

    async def _forward_keys(self, keys: asyncio.Queue[str]) -> None:
        while True:
            self._keypad.key(await keys.get())

    async def _step(self, event: Event) -> None:
        state, actions = next_state(self.state, event, self._policy)
        if _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug("%s --%s--> %s %s", self.state.value, type(event).__name__, state.value, actions)
        if isinstance(event, Lifted) and self.state is State.ON_HOOK:
            _LOGGER.info("handset lifted")
        if isinstance(event, Answered) and self.state is State.ON_HOOK:
            self._character = event.character  # who called: the whole call is with them
        if isinstance(event, PutDown) and self.state is not State.ON_HOOK:
            _LOGGER.info("handset put down (%s)", self.state.value)
        self.state = state
        if state is State.DIALING and isinstance(event, Lifted):
            self._keypad.begin(touch_tones=True)
        elif state in IN_CALL and (self._policy.dialing or self._end_key):
            if not self._keypad.open:
                # The microphone is the call's: touch tones come through its TouchToneTap while listening.
                self._keypad.begin(touch_tones=False, end_key=self._end_key)
        elif state is State.DIALING and isinstance(event, DigitDialed):
            self._keypad.listen_for_touch_tones()  # a number begun mid-call: the microphone is free now
        elif state is not State.DIALING and self._keypad.open:
            self._keypad.end()
        for action in actions:
            await self._execute(action)

    async def _execute(self, action: Action) -> None:
        if self._microphone is not None and isinstance(action, StopAll):
            self._microphone.release()  # the handset is down: no more listening, at once
        if self._overhearing is not None and isinstance(action, StopAll | PlayTone | Connect | Intercept):
            await self._overhearing.stop()  # tones and hang-up are not listened over
        if isinstance(action, StopPlayback):
            await self._cut(action)
        elif isinstance(action, StopAll):
            await self._hush()
            self._session_id, self._turn, self._character = None, None, None
        elif isinstance(action, Hush):
            await self._hush()
        elif isinstance(action, PlayTone):
            self._spawn(lambda: self._tone(action), ToneEnded(), "tone")
        elif isinstance(action, Connect):
            self._spawn(lambda: self._connect(action.character), Played(), "connect")
        elif isinstance(action, Intercept):
            self._spawn(self._intercept, Played(), "intercept")
        elif isinstance(action, CheckHealth):
            if self._monitor is not None:
                self._monitor.poke()
        elif isinstance(action, Say):
            self._spawn(lambda: self._say(action.phrase), Played(), "say")
        elif isinstance(action, Listen):
            self._spawn(self._listen, NoSpeech(), "listen")
        elif isinstance(action, Transcribe):
            self._spawn(lambda: self._transcribe(action.pcm), Transcribed("", ok=False), "stt")
        elif isinstance(action, Ask):
            self._spawn(lambda: self._ask(action), ReplyFinished(action, Outcome.UNREACHABLE), "reply")

    async def _hush(self) -> None:
        """Silence first (hang-up, a digit dialed), then wait for the work to unwind."""
        task = self._cancel_current()
        await self._sink.kill()
        if task is not None:
            await asyncio.wait({task}, timeout=_CANCEL_WAIT_SECONDS)

    async def _cut(self, cut: StopPlayback) -> None:
        """Barge-in: the reply (or phrase) stops where the caller is, the request is closed, listening goes on.

        Before any of the reply played (transcribing, waiting for the first audio), the caller simply
        went on talking: the utterance so far is kept and heard again together with what follows.
        """
        heard: float | None = None
        withdrawn = cut.went_on and self._reply_turn is not None  # a request was out: its reply must not count
        if self._reply_turn is not None and not cut.went_on:
            self._reply_turn.heard_seconds = heard = cut.heard_seconds
        if cut.went_on:
            _LOGGER.info("caller went on talking before the reply: one turn with what follows")
            self._carry = self._last_pcm
        if self._overhearing is not None:
            self._overhearing.playback_ended()
        await self._hush()
        if heard is not None:  # the server and the phone's own conversation keep only what was heard
            await report_heard(self._client, self._session_id, heard)
        elif withdrawn:  # the server may have sent (and recorded) a reply the phone held back: none of it counts
            await report_heard(self._client, self._session_id, 0.0, withdrawn=True)

    def _spawn(self, work: Callable[[], Coroutine[Any, Any, Event]], fallback: Event, name: str) -> None:
        """Run one stage as the call's task; its result (or ``fallback`` if it crashed) is the next event."""

        async def stage() -> None:
            try:
                event = await work()  # made here: a task cancelled before it starts leaves no coroutine behind
            except asyncio.CancelledError:
                raise
            except Exception:  # degrade inside the turn: log it, and let the machine move on
                _LOGGER.exception("%s failed", name)
                event = fallback
            self._events.put_nowait(event)

        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = asyncio.create_task(stage(), name=name)

    def _cancel_current(self) -> asyncio.Task[None] | None:
        """Cancel the running stage; returns it (still unwinding) so the caller can wait for it."""
        task, self._task = self._task, None
        if task is None or task.done():
            return None
        task.cancel()
        return task

    # ------------------------------------------------------------------ stages

    async def _say(self, phrase: Phrase) -> Event:
        spoken = await asyncio.to_thread(self._voice.phrase, phrase)
        await self._play(spoken)
        return Played()

    async def _tone(self, action: PlayTone) -> Event:
        await play_tone(self._sink, self._settings.tones, action.name, action.seconds)
        return ToneEnded()

    async def _connect(self, character: str) -> Event:
        """Ringback until the character's greeting is ready (a ring or two at most), then the greeting."""
        self._character, self._session_id, self._turn = character, None, None  # a new conversation
        fetch = asyncio.to_thread(self._greetings.fetch, character)
        greeting = await ring_until(self._sink, self._settings.tones, fetch)
        if greeting is not None and not greeting.known:
            return NumberUnknown()
        if greeting is None or greeting.pcm is None:
            _LOGGER.info("%s answers in the phone's own voice (server unreachable)", character)
            spoken = await asyncio.to_thread(self._voice.phrase, Phrase.GREETING)
        else:
            spoken = SpokenPhrase(f"greeting of {character}", greeting.sample_rate, greeting.pcm)
        _LOGGER.info("connected to %s", character)
        await self._play(spoken)
        return Played()

    async def _intercept(self) -> Event:
        await play_tone(self._sink, self._settings.tones, "sit", None)
        return await self._say(Phrase.NOT_IN_SERVICE)

    async def _play(self, spoken: SpokenPhrase) -> None:
        await self._sink.start(spoken.sample_rate)
        if self._overhearing is not None:
            self._overhearing.playback_started()
        try:
            block = max(2, int(spoken.sample_rate * _PLAY_BLOCK_SECONDS) * 2)
            for i in range(0, len(spoken.pcm), block):
                await self._sink.write(spoken.pcm[i : i + block])
            await self._sink.finish()
        finally:
            if self._overhearing is not None:
                self._overhearing.playback_ended()

    async def _listen(self) -> Event:
        try:
            utterance = await (self._overhearing.listen() if self._overhearing is not None else self._listen_fn())
        except Exception:  # a microphone that fails mid-call: log, pause, and let the call prompt again
            _LOGGER.exception("listening failed; retrying in %.0f s", _LISTEN_RETRY_SECONDS)
            await asyncio.sleep(_LISTEN_RETRY_SECONDS)
            return NoSpeech()
        if utterance is None:
            return NoSpeech()
        self._reply_playing = self._went_on = False
        if self._overhearing is not None:
            self._overhearing.hold()  # the phone has the turn; the caller may still go on, or interrupt
        pcm, self._carry = self._carry + utterance.pcm, b""
        self._last_pcm = pcm
        self._turn = Turn(
            speech_seconds=utterance.speech_seconds,
            endpoint_delay=utterance.endpoint_delay_seconds,
            ended_by=getattr(utterance, "ended_by", "silence"),
            heard_at=time.monotonic(),
        )
        up = self._monitor.up if self._monitor is not None else None
        if up is False:
            _LOGGER.info("turn: %.1fs of speech, server down: offline voice", utterance.speech_seconds)
        return Heard(pcm, up)

    async def _transcribe(self, pcm: bytes) -> Event:
        assert self._transcribe_fn is not None  # the policy sends audio to the server without one
        started = time.monotonic()
        text = (await asyncio.to_thread(self._transcribe_fn, pcm)).strip()
        if self._turn is not None:
            self._turn.stt_seconds, self._turn.transcript = time.monotonic() - started, text
        if not text:
            _LOGGER.info("turn: no words in %.1fs of speech", self._turn.speech_seconds if self._turn else 0.0)
        return Transcribed(text)

    async def _ask(self, ask: Ask) -> Event:
        if ask.delay_seconds > 0:
            _LOGGER.info("server busy; asking again in %.1fs", ask.delay_seconds)
            await asyncio.sleep(ask.delay_seconds)
        turn = self._turn or Turn(heard_at=time.monotonic(), transcript=ask.text)
        turn.request_at = time.monotonic()
        turn.character = self._character or self._settings.character
        request = ReplyRequest(
            text=ask.text,
            audio_pcm=ask.pcm,
            session_id=self._session_id,
            character=self._character or self._settings.character,
            prompt=self._settings.prompt,
            call_id=ask.call_id,
        )
        pump = ReplyPump(self._client, request)
        retry_after: float | None = None
        self._reply_turn = turn
        try:
            outcome = await self._late_reply_filled(self._stream_reply(pump, turn), turn)
        except asyncio.CancelledError:
            if turn.heard_seconds is None:
                _LOGGER.info("turn: heard=%r, cut off before the reply ended (hang-up, or went on)", turn.transcript)
            else:  # barge-in: the request is closed (finally), the turn is logged with what was heard
                turn.outcome, turn.ended_at, turn.session_id = Outcome.INTERRUPTED, time.monotonic(), self._session_id
                self._log_turn(turn)
            raise
        except Busy as err:
            outcome, retry_after = Outcome.BUSY, err.retry_after
        except ServerRejected as err:
            if err.code == "no_speech" and ask.pcm is not None:
                _LOGGER.info("turn: the server heard no words in %.1fs of audio", len(ask.pcm) / 32000)
                outcome = Outcome.NOTHING_HEARD
            else:
                _LOGGER.error("server refused the turn: %s", err)
                outcome = Outcome.REJECTED
        except ServerUnavailable as err:
            _LOGGER.warning("server unavailable: %s", err)
            outcome = Outcome.UNREACHABLE
        finally:
            pump.stop()
            self._reply_turn = None
            if turn.first_audio_at is not None:
                turn.pauses, turn.resumes = self._hold.pauses, self._hold.resumes
            if self._overhearing is not None:
                self._overhearing.playback_ended()
        if self._monitor is not None:
            self._monitor.report(outcome not in (Outcome.UNREACHABLE, Outcome.BROKEN), outcome.value)
        turn.outcome, turn.ended_at, turn.session_id = outcome, time.monotonic(), self._session_id
        finished = ReplyFinished(
            ask,
            outcome,
            retry_after,
            farewell=is_farewell(turn.transcript),
            hung_up=turn.call_ended and outcome is Outcome.DONE,
            line_dropped=outcome is Outcome.BROKEN and await line_dropped(self._client),
        )
        if not will_retry(finished, self._policy):
            self._log_turn(turn)
        return finished

    async def _stream_reply(self, pump: ReplyPump, turn: Turn) -> Outcome:
        """Play the reply as it arrives; returns how it ended (typed server errors propagate)."""
        cfg = self._settings.client
        assert turn.request_at is not None
        deadline = turn.request_at + cfg.first_audio_timeout_seconds
        playing = False
        while True:
            timeout = cfg.read_timeout_seconds + 1.0 if playing else deadline - time.monotonic()
            try:
                piece = await pump.next(timeout)
            except TimeoutError:
                if not playing:
                    _LOGGER.warning("no audio within %.1fs", cfg.first_audio_timeout_seconds)
                    return Outcome.NO_AUDIO
                return await self._broken(pump, "the reply stalled")
            except StreamBroken as err:
                if not playing:
                    raise ServerUnavailable(str(err)) from err
                return await self._broken(pump, str(err))
            if isinstance(piece, ReplyHead):
                self._session_id = piece.session_id or self._session_id
                if piece.transcript is not None:
                    turn.transcript = piece.transcript
                turn.character = piece.character or turn.character
            elif isinstance(piece, ReplyAudio):
                if not playing:
                    await self._hold_first_audio()
                    self._reply_playing = True
                    await self._sink.start(piece.sample_rate)
                    turn.first_audio_at, playing = time.monotonic(), True
                    self._hold.count_afresh()
                    if self._overhearing is not None:
                        self._overhearing.playback_started()
                await self._sink.write(piece.pcm)
            elif isinstance(piece, ReplyEnd):
                turn.call_ended = piece.call_ended
                break
        if not playing:
            _LOGGER.warning("the reply had no audio")
            return Outcome.NO_AUDIO
        await self._sink.finish()
        return Outcome.DONE

    async def _hold_first_audio(self) -> None:
        """Before the reply's first audio: the turn may have ended at a pause ("Could you tell me ... the name of
        the longest river?"). The audio waits until the caller has been silent pi.turns.reply_after_silence_seconds
        since the last word (a reply slower than that does not wait), at most
        pi.turns.hold_reply_while_talking_seconds longer when the caller talks again. Speech lasting long enough
        meanwhile is the caller going on: it cancels this request (a barge-in before any audio), the utterance
        continues, and the server drops the turn."""
        cfg = self._settings.turns
        if self._overhearing is None or not self._frames_reported or self._caller_quiet.is_set():
            return  # nobody listens between the turn and its reply, or the caller is silent long enough
        _LOGGER.debug("the reply's first audio waits for the caller's silence")
        with contextlib.suppress(TimeoutError):
            limit = cfg.reply_after_silence_seconds + cfg.hold_reply_while_talking_seconds
            await asyncio.wait_for(self._caller_quiet.wait(), limit)

    async def _late_reply_filled(self, reply: Coroutine[Any, Any, Outcome], turn: Turn) -> Outcome:
        """The reply, with the thinking filler first when its first audio is late (pi.filler)."""
        if self._filler is None:
            return await reply
        return await self._filler.cover(reply, turn.character, turn.heard_at)

    async def _broken(self, pump: ReplyPump, reason: str) -> Outcome:
        _LOGGER.warning("reply broke off: %s", reason)
        pump.stop()
        await self._sink.finish()
        return Outcome.BROKEN

    # ------------------------------------------------------------------ logging

    def _log_turn(self, turn: Turn) -> None:
        self.turns.append(turn)
        self._turn = None
        task = asyncio.create_task(log_turn(turn, self._client.reply_text), name="turn-log")
        self._log_tasks.add(task)
        task.add_done_callback(self._log_tasks.discard)

    async def drain_logs(self) -> None:
        """Wait (bounded) for pending turn log lines."""
        if self._log_tasks:
            await asyncio.wait(set(self._log_tasks), timeout=REPLY_TEXT_TIMEOUT_SECONDS + 1.0)
