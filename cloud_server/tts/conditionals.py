"""Voice conditionals for Chatterbox, computed once per voice and kept in memory and on disk.

A key is (model kind, checkpoint fingerprint, clip content hash, exaggeration). The disk copy is
written by ``Conditionals.save`` into a temporary file and renamed, so a half-written file is never
read. Callers hold the model lock: this class does no locking of its own.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.atomic import atomic_path

_LOGGER = logging.getLogger(__name__)


def clip_digest(path: str) -> str:
    """SHA-256 of a clip's bytes (the content, not the name, identifies a voice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def clone_conditionals(conds: Any) -> Any:
    """A deep copy whose tensors can be mutated freely (``generate`` writes into its conditionals)."""
    import torch

    def copy(value: Any) -> Any:
        return value.clone() if torch.is_tensor(value) else value

    t3 = type(conds.t3)(**{k: copy(v) for k, v in vars(conds.t3).items()})
    return type(conds)(t3, {k: copy(v) for k, v in conds.gen.items()})


class ConditionalsCache:
    """Pristine conditionals per voice: memory first, then disk, else computed by ``compute``."""

    def __init__(self, directory: Path, namespace: str, conditionals_cls: Any, device: str) -> None:
        self._dir = directory
        self._namespace = namespace
        self._cls = conditionals_cls
        self._device = device
        self._memory: dict[str, Any] = {}

    def path_for(self, clip_sha: str, exaggeration: float) -> Path:
        """The disk file for one voice."""
        return self._dir / f"{self._namespace}-{clip_sha[:32]}-ex{exaggeration:.3f}.pt"

    def get(self, clip: str, exaggeration: float, compute: Callable[[str, float], Any]) -> Any:
        """The pristine conditionals for ``clip`` (never hand these to ``generate``: clone them)."""
        path = self.path_for(clip_digest(clip), exaggeration)
        key = path.name
        if key in self._memory:
            return self._memory[key]
        conds = self._load(path)
        if conds is None:
            started = time.monotonic()
            conds = compute(clip, exaggeration)
            _LOGGER.info("Computed voice conditionals for %s in %.1f s", clip, time.monotonic() - started)
            self._save(conds, path)
        self._memory[key] = conds
        return conds

    def remember(self, key: str, conds: Any) -> Any:
        """Keep conditionals that need no disk copy (the built-in voice) under ``key``."""
        return self._memory.setdefault(key, conds)

    def recall(self, key: str) -> Any | None:
        """Conditionals kept with :meth:`remember`, or None."""
        return self._memory.get(key)

    def _load(self, path: Path) -> Any | None:
        if not path.is_file():
            return None
        try:
            conds = self._cls.load(path, map_location=self._device).to(self._device)
        except Exception as err:  # a corrupt or foreign file is recomputed, not fatal
            _LOGGER.warning("Ignoring unreadable conditionals %s: %s", path, err)
            return None
        _LOGGER.info("Loaded voice conditionals from %s", path)
        return conds

    def _save(self, conds: Any, path: Path) -> None:
        try:
            with atomic_path(path) as tmp:
                conds.save(tmp)
        except OSError as err:  # a read-only cache costs time on restart, nothing else
            _LOGGER.warning("Could not cache conditionals in %s: %s", path, err)
