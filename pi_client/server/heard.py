"""The barge-in seam: tell the server how much of the interrupted reply the caller heard.

The call logic stops playback and closes the reply (``ReplyPump.stop()``), then awaits
``report_heard`` with the seconds of the reply's audio that reached the earpiece, counted from the
reply's first sample (what was written to the player minus what it still held). The server that
spoke the reply clips its history to the sentences and words played, and the phone's own
conversation (sent with each turn to whichever server answers) keeps the same text. Await it before
the next turn is sent: the caller is still talking then, so it costs the turn nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pi_client.server.client import ServerClient
    from pi_client.server.fleet import ServerFleet

_LOGGER = logging.getLogger(__name__)


async def report_heard(
    client: ServerClient | ServerFleet, session_id: str | None, heard_seconds: float, withdrawn: bool = False
) -> str | None:
    """The reply of ``session_id`` was heard for ``heard_seconds``: the text now kept, or None.

    Never raises: a failed report is logged and the call goes on (the history then holds the reply as
    far as the server sent it). No session (the reply never started) means nothing to report.
    """
    if session_id is None:
        return None
    text = await asyncio.to_thread(client.report_heard, session_id, heard_seconds, withdrawn)
    if withdrawn:
        _LOGGER.info("the caller went on before any of the reply: turn withdrawn from the history")
    else:
        _LOGGER.info("barge-in: caller heard %.2fs of the reply: %r", heard_seconds, text)
    return text
