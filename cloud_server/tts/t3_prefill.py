"""Newcomers' prompts run through T3 together, left-padded, all at once or a chunk at a time.

A group is every sentence that arrived in one gather. Their prompts (of different lengths) are
left-padded to the longest, with an attention mask and explicit per-row positions, so each row computes
what it would alone, as the batch merge already arranges for decoding. With ``chunk`` > 0 the group
advances ``chunk`` positions per call and the decoder runs one step of the running batch in between:
running callers then wait for a chunk, never for a whole prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class PrefillGroup:
    """Prompts of several sentences being run through the transformer together."""

    jobs: list[Any]
    """The sentences' ``T3Job``s, in row order (each has ``sequence.rows`` rows)."""
    embeds: torch.Tensor
    """(rows, length, dim), left-padded."""
    mask: torch.Tensor
    """(rows, length): 1 on each row's own positions, 0 on its padding."""
    done: int = 0
    cache: Any = None
    last_hidden: torch.Tensor | None = None
    chunks: int = 0

    @classmethod
    def of(cls, jobs: list[Any], prompts: list[torch.Tensor]) -> PrefillGroup:
        """The group of these jobs with these prompts (rows, n, dim), padded to the longest."""
        length = max(p.size(1) for p in prompts)
        embeds = torch.cat([F.pad(p, (0, 0, length - p.size(1), 0)) for p in prompts])
        mask = torch.cat([
            F.pad(torch.ones(p.size(0), p.size(1), dtype=torch.long, device=p.device), (length - p.size(1), 0))
            for p in prompts
        ])
        return cls(jobs, embeds, mask)

    @property
    def length(self) -> int:
        return self.embeds.size(1)

    @property
    def finished(self) -> bool:
        return self.done >= self.length

    def advance(self, tfmr: Any, chunk: int) -> None:
        """Run the next ``chunk`` positions (all that is left when ``chunk`` is 0) into the group's cache."""
        end = self.length if chunk <= 0 else min(self.length, self.done + chunk)
        positions = (self.mask.cumsum(dim=1) - 1).clamp(min=0)[:, self.done : end]
        out = tfmr(
            inputs_embeds=self.embeds[:, self.done : end], attention_mask=self.mask[:, :end],
            position_ids=positions, past_key_values=self.cache, use_cache=True,
        )
        self.cache, self.done, self.chunks = out.past_key_values, end, self.chunks + 1
        if self.finished:
            self.last_hidden = out.last_hidden_state[:, -1, :]

    def rows_of(self) -> list[tuple[Any, slice]]:
        """Each job with the slice of its rows."""
        out, row = [], 0
        for job in self.jobs:
            out.append((job, slice(row, row + job.sequence.rows)))
            row += job.sequence.rows
        return out
