"""Files in ``data_dir/outputs`` when no bucket is configured, served at ``GET /outputs/<name>`` (with the key).

Written atomically (a reader sees the whole file or none); kept within a disk budget and an age
limit, the oldest going first.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Final

from cloud_server.storage.base import AudioKey, AudioLink, AudioStore, StorageError
from common.atomic import atomic_write
from common.config import LocalOutputsConfig

_LOGGER = logging.getLogger(__name__)
OUTPUT_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}-[0-9]{8}-[0-9a-f]{32}\.wav")
"""``<character>-YYYYMMDD-<digest>.wav``: checked in full before any path is built from a name."""


class LocalStore(AudioStore):
    """WAV files in one directory."""

    backend = "local"

    def __init__(self, directory: Path, cfg: LocalOutputsConfig) -> None:
        self.directory = directory
        self._cfg = cfg
        self._lock = threading.Lock()

    def name(self, key: AudioKey) -> str:
        return f"{key.character}-{key.day.strftime('%Y%m%d')}-{key.digest}.wav"

    def path(self, name: str) -> Path | None:
        """The file for a valid, present, unexpired ``name``; None otherwise."""
        if not OUTPUT_NAME.fullmatch(name):
            return None
        path = self.directory / name
        try:
            st = path.stat()
        except OSError:
            return None
        if _age(st.st_mtime) > self._cfg.max_age_seconds:
            return None
        return path

    def size(self, name: str) -> int | None:
        path = self.path(name)
        return path.stat().st_size if path is not None else None

    def put(self, name: str, wav: bytes) -> None:
        if not OUTPUT_NAME.fullmatch(name):
            raise ValueError(f"bad output name {name!r}")
        if len(wav) > self._cfg.max_bytes:
            raise StorageError(f"the file ({len(wav)} bytes) is over server.storage.local.max_bytes")
        with self._lock:
            try:
                atomic_write(self.directory / name, wav)
            except OSError as err:
                _LOGGER.warning("Could not write %s: %s", self.directory / name, err)
                raise StorageError(f"the outputs directory is not writable: {err.strerror}") from err
            self._clean_up(keep=name)

    def link(self, name: str, *, presigned: bool, expires_in: int, base_url: str) -> AudioLink:
        if not presigned:
            raise StorageError("public URLs need S3 with server.storage.s3.public_base_url")
        path = self.directory / name
        expires = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC) + dt.timedelta(
            seconds=self._cfg.max_age_seconds
        )
        return AudioLink(f"{base_url.rstrip('/')}/outputs/{name}", expires)

    def can_link_publicly(self) -> bool:
        return False

    def problems(self) -> list[str]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            return [f"server.data_dir: cannot create {self.directory}: {err.strerror}"]
        if not os.access(self.directory, os.W_OK):
            return [f"server.data_dir: {self.directory} is not writable"]
        return []

    def status(self) -> dict[str, Any]:
        files = self._files()
        problems = self.problems()
        return {
            "backend": self.backend,
            "files": len(files),
            "bytes": sum(size for _, _, size in files),
            "ok": not problems,
            "problem": problems[0] if problems else None,
        }

    def _files(self) -> list[tuple[float, Path, int]]:
        """(mtime, path, size) of every stored output, oldest first."""
        found = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return []
        for entry in entries:
            if OUTPUT_NAME.fullmatch(entry.name):
                try:
                    st = entry.stat()
                except OSError:
                    continue
                found.append((st.st_mtime, Path(entry.path), st.st_size))
        return sorted(found)

    def _clean_up(self, keep: str) -> None:
        """Delete files past the age limit, then the oldest until the rest fit the budget."""
        files = self._files()
        total = sum(size for _, _, size in files)
        for mtime, path, size in files:
            if path.name == keep:
                continue
            if _age(mtime) > self._cfg.max_age_seconds or total > self._cfg.max_bytes:
                path.unlink(missing_ok=True)
                total -= size


def _age(mtime: float) -> float:
    return dt.datetime.now(dt.UTC).timestamp() - mtime
