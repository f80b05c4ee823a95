"""Characters edited at runtime, kept in ``<data_dir>/characters.json`` on top of config.yaml's.

config.yaml's characters are the defaults. The file holds only what differs from them: characters
created or changed (every field, so a later config change cannot half-change an edited character)
and config characters removed. It is rewritten atomically on every change, so a crash leaves the
old file or the new, and a restart serves the same characters.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from common.atomic import atomic_write
from common.config import CharacterConfig, ConfigError

_LOGGER = logging.getLogger(__name__)
FILE_NAME: Final = "characters.json"
_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(CharacterConfig))


class CharacterStore:
    """Reads and writes the runtime character edits."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> CharacterStore:
        """The store under the server's data directory."""
        return cls(data_dir / FILE_NAME)

    def load(self, defaults: Mapping[str, CharacterConfig]) -> dict[str, CharacterConfig]:
        """config.yaml's characters with the stored edits applied.

        An unreadable file stops the server at start (ConfigError) rather than being overwritten
        by the next edit: it holds someone's work.
        """
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return dict(defaults)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{self.path}: unreadable character edits ({err}); fix or remove the file") from err
        if not isinstance(raw, dict) or not isinstance(raw.get("characters", {}), dict):
            raise ConfigError(f"{self.path}: expected {{'characters': {{...}}, 'removed': [...]}}")
        merged = {cid: c for cid, c in defaults.items() if cid not in set(raw.get("removed", []))}
        for cid, fields in raw.get("characters", {}).items():
            if not isinstance(fields, dict):
                raise ConfigError(f"{self.path}: character {cid!r} is not an object")
            known = {k: v for k, v in fields.items() if k in _FIELDS}
            merged[str(cid)] = dataclasses.replace(CharacterConfig(), **known)
        return merged

    def save(self, characters: Mapping[str, CharacterConfig], defaults: Mapping[str, CharacterConfig]) -> None:
        """Store how ``characters`` differ from ``defaults``, atomically."""
        changed = {
            cid: dataclasses.asdict(c) for cid, c in characters.items() if defaults.get(cid) != c
        }
        removed = sorted(cid for cid in defaults if cid not in characters)
        payload: dict[str, Any] = {"characters": changed, "removed": removed}
        atomic_write(self.path, json.dumps(payload, indent=2, sort_keys=True))
        _LOGGER.info("Character edits saved (%d changed, %d removed)", len(changed), len(removed))
