"""One INFO line per turn for journald: what the caller said, what the phone answered, and how long each stage took."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pi_client.call.machine import Outcome

_LOGGER = logging.getLogger(__name__)

REPLY_TEXT_TIMEOUT_SECONDS = 4.0
"""Bound on fetching the reply text for the turn's log line, in seconds."""


@dataclass
class Turn:
    """What one turn took (monotonic timestamps), for its log line."""

    speech_seconds: float = 0.0
    endpoint_delay: float = 0.0
    ended_by: str = "silence"
    """How the end of the caller's turn was decided: "model" (Smart Turn), "silence", "max_length", "audio_end"."""
    heard_at: float = 0.0
    """When endpointing decided the caller had finished."""
    stt_seconds: float | None = None
    transcript: str | None = None
    request_at: float | None = None
    first_audio_at: float | None = None
    ended_at: float | None = None
    outcome: Outcome | None = None
    session_id: str | None = None
    reply_text: str | None = None
    character: str | None = None
    """Who answered (the server's X-Character, else the character asked for)."""
    heard_seconds: float | None = None
    """Barge-in: seconds of the reply the caller heard before talking over it (None: not interrupted).
    The hook for "history records what was heard": the server is told this when the API exists."""
    pauses: int = 0
    """Times the reply's earpiece paused because the caller started talking (pi.turns.barge_in.pause_on_speech)."""
    resumes: int = 0
    """Of those, the pauses that resumed: speech too short to be a barge-in (a false interruption)."""
    call_ended: bool = False
    """The character hung up in this reply (the server's session says ``call_ended``)."""


async def log_turn(turn: Turn, reply_text: Callable[[str], str | None]) -> None:
    """Fetch the reply text (best effort, bounded, in a thread), then log the turn's one line."""
    if turn.session_id and turn.outcome in (Outcome.DONE, Outcome.BROKEN, Outcome.INTERRUPTED):
        with contextlib.suppress(TimeoutError):
            turn.reply_text = await asyncio.wait_for(
                asyncio.to_thread(reply_text, turn.session_id), REPLY_TEXT_TIMEOUT_SECONDS
            )
    _LOGGER.info(
        "turn: heard=%r reply=%r outcome=%s speech=%.2fs end_by=%s endpoint=%.2fs stt=%s first_audio=%s latency=%s"
        " total=%s barge_in=%s pauses=%d resumed=%d character=%s",
        turn.transcript,
        turn.reply_text,
        turn.outcome.value if turn.outcome else None,
        turn.speech_seconds,
        turn.ended_by,
        turn.endpoint_delay,
        _secs(turn.stt_seconds),
        _secs(_diff(turn.first_audio_at, turn.request_at)),
        _secs(_diff(turn.first_audio_at, turn.heard_at)),
        _secs(_diff(turn.ended_at, turn.heard_at)),
        _secs(turn.heard_seconds),
        turn.pauses,
        turn.resumes,
        turn.character or "-",
    )


def _diff(later: float | None, earlier: float | None) -> float | None:
    return later - earlier if later is not None and earlier is not None else None


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"
