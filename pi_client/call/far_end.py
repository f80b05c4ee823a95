"""The far end gone: after a reply broke off, is the line still there, or did the call drop?

A reply that breaks off mid-stream is a hiccup when a server still answers (the phone says
"the line dropped, say that again" and the call goes on, the next turn maybe on another server).
When no server answers any more, nothing can carry the call on: the caller hears the reorder
tone, as on a dropped call, instead of being asked to repeat into a dead line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

_LOGGER = logging.getLogger(__name__)


class Reachable(Protocol):
    """The phone's server or fleet of servers (pi_client.server)."""

    def reachable(self) -> bool:
        """True when a server answers /health now."""


async def line_dropped(servers: Reachable) -> bool:
    """True when no server answers now (checked in a thread; bounded by the connect timeout)."""
    if await asyncio.to_thread(servers.reachable):
        return False
    _LOGGER.warning("the line dropped: no server answers after the reply broke off")
    return True
