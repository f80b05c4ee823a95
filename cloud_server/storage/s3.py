"""Files in an S3-compatible bucket (AWS, MinIO, Cloudflare R2, Backblaze B2) through boto3.

Credentials come only from boto3's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, an instance role); the endpoint from ``server.storage.s3.endpoint_url`` or
``AWS_ENDPOINT_URL``. A PUT stores the whole object or nothing, so a failure leaves no partial file.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any, Final

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from cloud_server.storage.base import AudioKey, AudioLink, AudioStore, StorageError
from common.config import S3Config

_LOGGER = logging.getLogger(__name__)
_STATUS_CACHE_SECONDS: Final = 10.0
_NOT_FOUND: Final = ("404", "NoSuchKey", "NotFound")
_MISSING_BUCKET: Final = ("NoSuchBucket",)
_DENIED: Final = ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                  "ExpiredToken", "Forbidden")


class S3Store(AudioStore):
    """Objects ``prefix/<character>/YYYY/MM/DD/<digest>.wav`` in one bucket."""

    backend = "s3"

    def __init__(self, cfg: S3Config) -> None:
        if not cfg.bucket:
            raise ValueError("S3Store needs server.storage.s3.bucket")
        self._cfg = cfg
        self.bucket: str = cfg.bucket
        self._client: Any = None
        self._setup_error: str | None = None
        self._seen: tuple[float, list[str]] = (0.0, [])
        self._refreshing = False
        self._lock = threading.Lock()
        try:
            session = boto3.session.Session(region_name=cfg.region)
            self._session = session
            self._client = session.client(
                "s3",
                endpoint_url=cfg.endpoint_url,
                config=BotoConfig(
                    connect_timeout=cfg.timeout_seconds,
                    read_timeout=cfg.timeout_seconds,
                    retries={"max_attempts": 2, "mode": "standard"},
                    signature_version="s3v4",
                ),
            )
        except (BotoCoreError, ValueError) as err:
            self._setup_error = f"server.storage.s3: the client could not be made: {err}"
            _LOGGER.warning("%s", self._setup_error)

    def name(self, key: AudioKey) -> str:
        parts = [self._cfg.prefix.strip("/"), key.character, key.day.strftime("%Y/%m/%d"), f"{key.digest}.wav"]
        return "/".join(p for p in parts if p)

    def size(self, name: str) -> int | None:
        try:
            head = self._s3().head_object(Bucket=self.bucket, Key=name)
        except ClientError as err:
            if _code(err) in _NOT_FOUND:
                return None
            raise self._error(err, "look up") from err
        except (BotoCoreError, NoCredentialsError) as err:
            raise self._error(err, "look up") from err
        self._remember([])
        return int(head["ContentLength"])

    def put(self, name: str, wav: bytes) -> None:
        try:
            self._s3().put_object(Bucket=self.bucket, Key=name, Body=wav, ContentType="audio/wav")
        except (ClientError, BotoCoreError) as err:
            raise self._error(err, "store") from err
        self._remember([])
        _LOGGER.info("Stored s3://%s/%s (%d bytes)", self.bucket, name, len(wav))

    def link(self, name: str, *, presigned: bool, expires_in: int, base_url: str) -> AudioLink:
        if not presigned:
            if not self._cfg.public_base_url:
                raise StorageError("public URLs are not configured (server.storage.s3.public_base_url)")
            return AudioLink(f"{self._cfg.public_base_url.rstrip('/')}/{name}", None)
        try:
            url = self._s3().generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=expires_in
            )
        except (ClientError, BotoCoreError) as err:
            raise self._error(err, "sign a URL for") from err
        return AudioLink(str(url), dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in))

    def can_link_publicly(self) -> bool:
        return bool(self._cfg.public_base_url)

    def problems(self) -> list[str]:
        if self._setup_error:
            return [self._setup_error]
        if self._session.get_credentials() is None:
            return [
                "server.storage.s3: no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or give the machine a role)"
            ]
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as err:
            return [str(self._error(err, "reach"))]
        return []

    def status(self) -> dict[str, Any]:
        """The last known state, never waiting on S3 (/health must stay fast): a stale one is refreshed
        in the background, and every call the routes make updates it too. ``ok`` is None until known."""
        with self._lock:
            checked, problems = self._seen
            if time.monotonic() - checked > _STATUS_CACHE_SECONDS and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, name="s3-status", daemon=True).start()
        known = checked > 0
        return {
            "backend": self.backend,
            "bucket": self.bucket,
            "prefix": self._cfg.prefix,
            "endpoint": self._client.meta.endpoint_url if self._client is not None else None,
            "ok": (not problems) if known else None,
            "problem": problems[0] if problems else None,
        }

    def _refresh(self) -> None:
        try:
            self._remember(self.problems())
        finally:
            self._refreshing = False

    def _remember(self, problems: list[str]) -> None:
        with self._lock:
            self._seen = (time.monotonic(), problems)

    def _s3(self) -> Any:
        if self._client is None:
            raise StorageError(self._setup_error or "server.storage.s3: no client")
        return self._client

    def _error(self, err: Exception, doing: str) -> StorageError:
        """One sentence that says what to fix (also what /health shows next); details go to the log."""
        failure = self._describe(err, doing)
        if doing != "reach":  # problems() reports its own result
            self._remember([str(failure)])
        return failure

    def _describe(self, err: Exception, doing: str) -> StorageError:
        _LOGGER.warning("S3 could not %s bucket %s: %s", doing, self.bucket, err)
        where = f"bucket {self.bucket!r}"
        if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
            return StorageError(f"no usable AWS credentials for {where} (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
        if isinstance(err, ClientError):
            code = _code(err)
            if code in _MISSING_BUCKET or (code in _NOT_FOUND and doing == "reach"):
                return StorageError(f"{where} does not exist (server.storage.s3.bucket)")
            if code in _DENIED:
                return StorageError(f"S3 refused the credentials for {where} ({code}): check AWS_ACCESS_KEY_ID, "
                                    "AWS_SECRET_ACCESS_KEY and the bucket's permissions")
            return StorageError(f"S3 could not {doing} {where}: {code}")
        return StorageError(f"S3 is unreachable for {where}: {type(err).__name__}")


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))
