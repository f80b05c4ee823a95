"""Fit a conversation into the model's context: the oldest history goes first, whatever the backend."""

from __future__ import annotations

import logging

from cloud_server.llm.base import LLM

_LOGGER = logging.getLogger(__name__)

MESSAGE_OVERHEAD_TOKENS = 8
"""Tokens a chat template adds around each message (role markers, separators), rounded up."""


def fit_context(messages: list[dict[str, str]], llm: LLM) -> list[dict[str, str]]:
    """``messages`` with the oldest history turns dropped until the prompt leaves room for the reply.

    The system message (persona) and the last message (the caller's new words) always stay; history
    goes a whole turn (user + assistant) at a time. Logs one INFO line when something was dropped.
    """
    budget = llm.context_tokens - llm.reply_tokens
    try:
        costs = [llm.count_tokens(m.get("content", "")) + MESSAGE_OVERHEAD_TOKENS for m in messages]
    except Exception as err:  # the model cannot load: the reply itself will fail and say why
        _LOGGER.debug("cannot count tokens (%s): history sent untrimmed", err)
        return messages
    total = sum(costs)
    first = 1 if messages and messages[0].get("role") == "system" else 0
    last = len(messages) - 1
    start = first
    while total > budget and start < last:
        turn = 2 if start + 1 < last and messages[start + 1].get("role") == "assistant" else 1
        total -= sum(costs[start : start + turn])
        start += turn
    if start == first:
        return messages
    _LOGGER.info(
        "History trimmed to fit the %d-token context: dropped %d of %d messages, prompt now ~%d tokens%s",
        llm.context_tokens,
        start - first,
        last - first,
        total,
        "" if total <= budget else " (still too long)",
    )
    return messages[:first] + messages[start:]
