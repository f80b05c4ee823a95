"""Where /generate-audio keeps its files: one small seam (:class:`AudioStore`), two backends.

``s3.py`` (any S3-compatible service through boto3) when ``server.storage.s3.bucket`` is set,
``local.py`` (``data_dir/outputs``, served at ``GET /outputs/<name>``) otherwise.
"""

from __future__ import annotations

from pathlib import Path

from cloud_server.storage.base import AudioKey, AudioLink, AudioStore, StorageError
from common.config import StorageConfig

__all__ = ["AudioKey", "AudioLink", "AudioStore", "StorageError", "make_store"]


def make_store(cfg: StorageConfig, data_dir: Path) -> AudioStore:
    """The configured backend; boto3 is imported only when S3 is."""
    if cfg.s3.bucket:
        from cloud_server.storage.s3 import S3Store

        return S3Store(cfg.s3)
    from cloud_server.storage.local import LocalStore

    return LocalStore(data_dir / "outputs", cfg.local)
