"""GPU memory for /health and the console's status tab, when the voice model runs on CUDA.

``torch.cuda.mem_get_info`` is the whole device as the driver sees it (other processes count too);
``memory_allocated`` / ``memory_reserved`` are this server's tensors and the cache torch keeps for
them. On CPU there is nothing to report and torch is not even imported.
"""

from __future__ import annotations

import logging
from typing import Any, Final

_LOGGER = logging.getLogger(__name__)
MIB: Final = 1024 * 1024


def gpu_memory(device: str) -> dict[str, Any] | None:
    """The memory of the CUDA device ``device`` names ("cuda", "cuda:1"), in MiB; None when not on a GPU."""
    if not device.startswith("cuda"):
        return None
    import torch  # lazy: only a server whose voice is on CUDA gets here

    try:
        if not torch.cuda.is_available():
            return None
        index = torch.device(device).index
        if index is None:
            index = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        return {
            "name": torch.cuda.get_device_name(index),
            "total_mib": round(total / MIB),
            "used_mib": round((total - free) / MIB),
            "free_mib": round(free / MIB),
            "allocated_mib": round(torch.cuda.memory_allocated(index) / MIB),
            "reserved_mib": round(torch.cuda.memory_reserved(index) / MIB),
        }
    except (RuntimeError, AssertionError) as err:  # a lost device: /health still answers
        _LOGGER.warning("Could not read GPU memory of %s: %s", device, err)
        return None
