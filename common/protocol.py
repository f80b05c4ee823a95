"""The Pi ↔ server protocol, named once: routes, request fields and reply headers both sides use."""

from __future__ import annotations

from typing import Final

CUT_MARK: Final = "…"
"""Ends a reply in the history that the caller cut short, so the LLM reads it as interrupted, not finished."""


class Route:
    """Paths on the voice server."""

    PROCESS_TEXT: Final = "/process-text"
    """POST JSON ``{text, session_id?, character?, prompt?, history?}`` → streamed WAV reply."""
    PROCESS_AUDIO: Final = "/process-audio"
    """POST a WAV recording (fields as query parameters) → the same streamed reply."""
    TRANSCRIBE: Final = "/transcribe"
    """POST a recording (as /process-audio) → JSON ``{text, duration}``; no reply (the Wyoming bridge's STT)."""
    SESSIONS: Final = "/sessions"
    """GET ``/sessions/<session_id>``: the conversation so far."""
    HEARD: Final = "/heard"
    """POST ``/sessions/<session_id>/heard`` ``{heard_seconds}`` after a barge-in: the history keeps only
    what the caller heard of the latest reply → JSON ``{heard_text, cut, ...}``."""
    HEALTH: Final = "/health"
    """GET, no key: ``ok`` or ``degraded``."""
    CALLS: Final = "/calls"
    """POST ``{phone, character?, reason, at?, ttl_seconds?}`` queues a call to a phone; ``/calls/next?phone=``
    (GET, long-poll) hands it to the phone; ``/calls/<id>/answer`` (POST) streams the character's first words,
    ``/calls/<id>/missed`` and ``/calls/<id>/busy`` (POST) report what became of it."""


class Field:
    """Request fields (JSON body of /process-text, query parameters of /process-audio)."""

    TEXT: Final = "text"
    SESSION_ID: Final = "session_id"
    CHARACTER: Final = "character"
    PROMPT: Final = "prompt"
    """Extra system text from a trusted client, appended below the character's persona."""
    HEARD_SECONDS: Final = "heard_seconds"
    """Seconds of the latest reply's audio the caller heard, from its first sample (the /heard report)."""
    WITHDRAWN: Final = "withdrawn"
    """In the /heard report: the caller heard none of the reply and went on talking, so the turn is withdrawn
    (the history drops it; the caller's words come again, with what followed, in the next turn)."""
    HISTORY: Final = "history"
    """The conversation so far, ``[{role: user|assistant, content}]``, oldest first: the server answers
    from it instead of its own session, so any server can answer any turn (a JSON string in form fields)."""
    PHONE: Final = "phone"
    """The phone a call is for (``POST /calls``, ``GET /calls/next``)."""
    REASON: Final = "reason"
    """What the character calls about; it goes into the character's prompt when the handset is lifted."""


ANSWERED_CUE: Final = "(The phone rings and they pick it up.)"
"""The caller's side of a placed call's first turn (the character speaks first): the server sends it to the LLM
as the user's line, and the phone keeps it in the call's history as what the caller "said"."""


class Header:
    """Reply headers of a streamed turn."""

    SESSION_ID: Final = "X-Session-Id"
    """The session the turn was recorded in (new when the request named none)."""
    CHARACTER: Final = "X-Character"
    SAMPLE_RATE: Final = "X-Sample-Rate"
    """Hz of the streamed WAV (also in its header)."""
    TRANSCRIPT: Final = "X-Transcript"
    """/process-audio: what the server heard, percent-encoded UTF-8."""
    INPUT_AUDIO_DURATION: Final = "X-Input-Audio-Duration"
    """/process-audio: seconds of the uploaded recording."""
