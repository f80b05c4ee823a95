"""Newcomers' prompts run through T3 together, left-padded, all at once or a chunk at a time.

A group is every sentence that arrived in one gather. Their prompts (of different lengths) are
left-padded to the longest, with an attention mask and explicit per-row positions, so each row computes
what it would alone, as the batch merge already arranges for decoding. With ``chunk`` > 0 the group
advances ``chunk`` positions per call and the decoder runs one step of the running batch in between:
running callers then wait for a chunk, never for a whole prompt.

When every row starts with the same voice conditioning (one voice: a standard sentence's two CFG
rows always do, and so do callers speaking in the same voice), that shared prefix goes through the
transformer once, for one row, and its KV cache is copied to every row; the rest of each prompt then
follows it, left-padded, the mask keeping each row to its own positions.
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
    shared: int = 0
    """Leading positions the same in every row, run once for one row."""

    @classmethod
    def of(cls, jobs: list[Any], prompts: list[torch.Tensor], shared: int = 0) -> PrefillGroup:
        """The group of these jobs with these prompts (rows, n, dim): a shared prefix, then the rest left-padded."""
        shared = shared if shared and _same_prefix(prompts, shared) else 0
        rests = [p[:, shared:] for p in prompts]
        length = max(r.size(1) for r in rests)
        rows = sum(p.size(0) for p in prompts)
        prefix = prompts[0][:1, :shared].expand(rows, -1, -1)
        embeds = torch.cat([prefix, torch.cat([F.pad(r, (0, 0, length - r.size(1), 0)) for r in rests])], dim=1)
        mask = torch.cat([
            F.pad(torch.ones(r.size(0), r.size(1), dtype=torch.long, device=r.device), (shared + length - r.size(1), 0))
            for r in rests
        ])
        mask[:, :shared] = 1
        return cls(jobs, embeds, mask, shared=shared)

    @property
    def length(self) -> int:
        return self.embeds.size(1)

    @property
    def finished(self) -> bool:
        return self.done >= self.length

    def advance(self, tfmr: Any, chunk: int) -> None:
        """Run the next ``chunk`` positions (all that is left when ``chunk`` is 0) into the group's cache."""
        if self.done < self.shared:  # the shared prefix first, once, then its cache for every row
            out = tfmr(inputs_embeds=self.embeds[:1, : self.shared], use_cache=True)
            rows = self.embeds.size(0)
            for layer in out.past_key_values.layers:
                layer.keys = layer.keys.expand(rows, -1, -1, -1).contiguous()
                layer.values = layer.values.expand(rows, -1, -1, -1).contiguous()
            self.cache, self.done, self.chunks = out.past_key_values, self.shared, self.chunks + 1
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


def _same_prefix(prompts: list[torch.Tensor], length: int) -> bool:
    """Whether every row of every prompt starts with the same ``length`` positions (and has more after)."""
    first = prompts[0][:1, :length]
    return all(p.size(1) > length and torch.equal(p[:, :length], first.expand(p.size(0), -1, -1)) for p in prompts)
