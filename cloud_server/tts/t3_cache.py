"""The running batch's shared KV cache: newcomers merged in under it, ended rows taken out.

Rows of different lengths share one cache by left padding: a 2-D attention mask (1 on a row's own
positions) keeps every row from seeing another's padding, and each row's explicit positions keep its
rotary phases what they would be alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def merge(cache: Any, mask: torch.Tensor | None, new_cache: Any, new_mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """The batch's cache and mask with the newcomers' rows added below, the shorter side left-padded."""
    if cache is None or mask is None:
        return new_cache, new_mask
    length = max(mask.size(1), new_mask.size(1))
    for mine, theirs in zip(cache.layers, new_cache.layers, strict=True):
        mine.keys = torch.cat([_left_pad(mine.keys, length), _left_pad(theirs.keys, length)])
        mine.values = torch.cat([_left_pad(mine.values, length), _left_pad(theirs.values, length)])
    return cache, torch.cat([_left_pad_mask(mask, length), _left_pad_mask(new_mask, length)])


def keep_rows(cache: Any, mask: torch.Tensor, rows: list[int]) -> tuple[Any, torch.Tensor]:
    """Only these rows, and without the leading padding none of them needs any more."""
    index = torch.tensor(rows, device=mask.device)
    cache.batch_select_indices(index)
    mask = mask[index]
    first = int(mask.any(dim=0).nonzero()[0])
    if first:
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]
        mask = mask[:, first:]
    return cache, mask


def _left_pad(states: torch.Tensor, length: int) -> torch.Tensor:
    """(rows, heads, time, dim) padded with zeros at the start of ``time`` to ``length``."""
    return F.pad(states, (0, 0, length - states.size(-2), 0))


def _left_pad_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    return F.pad(mask, (length - mask.size(1), 0))
