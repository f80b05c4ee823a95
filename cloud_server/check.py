"""``python -m cloud_server check``: the settings, the API key and the storage, checked without serving.

It loads no model and binds no port: one line per problem, exit 1; "ok" lines and exit 0 otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cloud_server.storage import make_store
from common.config import Config, ConfigError, expand_path, load_config, resolve_api_key

INSECURE_ENV = "AI_TELEPHONE_INSECURE_NO_AUTH"


def problems(config_path: str | None, env: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(what is fine, what is wrong), each one sentence."""
    env = os.environ if env is None else env
    try:
        config = load_config(config_path, env)
    except ConfigError as err:
        return [], [f"config: {err}"]
    fine: list[str] = ["config: valid"]
    wrong: list[str] = []
    try:
        key = resolve_api_key(config.server.api_key_file, env)
    except ConfigError as err:
        key, wrong = None, [*wrong, f"API key: {err}"]
    if key:
        fine.append("API key: set")
    elif not wrong and env.get(INSECURE_ENV, "") not in ("1", "true", "yes"):
        wrong.append("API key: none (set AI_TELEPHONE_API_KEY or server.api_key_file)")
    if config.server.default_character not in config.server.characters:
        wrong.append(f"server.default_character: {config.server.default_character!r} is not in server.characters")
    fine_storage, wrong_storage = _storage(config)
    return fine + fine_storage, wrong + wrong_storage


def _storage(config: Config) -> tuple[list[str], list[str]]:
    s3 = config.server.storage.s3
    store = make_store(config.server.storage, expand_path(config.server.data_dir))
    found = store.problems()
    if found:
        return [], [f"storage: {p}" for p in found]
    where = f"s3://{s3.bucket}/{s3.prefix}" if s3.bucket else f"{expand_path(config.server.data_dir) / 'outputs'}"
    return [f"storage: {where} reachable and writable" if not s3.bucket else f"storage: {where} reachable"], []
