"""Real S3-protocol servers for the tests, as subprocesses on 127.0.0.1.

moto's standalone server (``moto[server]``) does most: ``auth=True`` makes it check signatures and
IAM permissions after the set-up calls (an IAM user with an access key, its policy and the bucket),
so wrong credentials are refused as AWS would. Without it, moto accepts any credentials, and
presigned GETs work (with auth on, moto cannot serve query-string-signed requests). moto never
refuses an expired presigned URL, though.

s3rver (npm, installed into tests/s3rver/ by scripts/setup) does: a presigned URL past its
``X-Amz-Date`` + ``X-Amz-Expires`` gets 403 ``AccessDenied`` "Request has expired", as on AWS. It
does not verify SigV4 signatures, serves unsigned GETs, and knows one key pair, so it is only
used for expiry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.server_rig import REPO_ROOT, free_port, stop_process

START_TIMEOUT = 30.0
REGION = "us-east-1"
S3RVER = REPO_ROOT / "tests" / "s3rver" / "node_modules" / "s3rver" / "bin" / "s3rver.js"
S3RVER_KEY = "S3RVER"  # s3rver's one built-in key pair: id and secret are both this
POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'


@dataclass
class S3Server:
    """A running moto server and the credentials that work on it."""

    endpoint: str
    access_key: str
    secret_key: str

    def client(self, secret_key: str | None = None) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
        )

    def env(self, secret_key: str | None = None) -> dict[str, str]:
        """The AWS variables a process needs to use this server (and nothing from the machine's own ~/.aws)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }


def isolated_aws_env(tmp: Path) -> dict[str, str]:
    """No shared config or credentials files, and no instance-metadata probe (it would leave 127.0.0.1)."""
    return {
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextmanager
def moto_server(workdir: Path, buckets: tuple[str, ...] = (), auth: bool = False) -> Iterator[S3Server]:
    """Start ``moto_server`` on a free port, create ``buckets``, stop it afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(3 + len(buckets))  # user, key, policy, then the buckets
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    # The probe is no S3 action, so it does not use up INITIAL_NO_AUTH_ACTION_COUNT.
    with _running(command, env, workdir, port, probe="/moto-api/data.json") as endpoint:
        server = S3Server(endpoint, "AKIAPLACEHOLDER00000", "placeholder-secret")
        if auth:
            server = _with_iam_user(server)
        _create(server, buckets)
        yield server


@contextmanager
def s3rver_server(workdir: Path, buckets: tuple[str, ...] = ()) -> Iterator[S3Server]:
    """Start s3rver on a free port (objects under ``workdir``), create ``buckets``, stop it afterwards."""
    if not S3RVER.is_file():
        raise RuntimeError(f"{S3RVER} is missing: run scripts/setup (it installs s3rver with npm)")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    command = ["node", str(S3RVER), "-d", str(workdir / "objects"), "-a", "127.0.0.1", "-p", str(port)]
    with _running(command, env, workdir, port, probe="/") as endpoint:
        server = S3Server(endpoint, S3RVER_KEY, S3RVER_KEY)
        _create(server, buckets)
        yield server


@contextmanager
def _running(command: list[str], env: dict[str, str], workdir: Path, port: int, probe: str) -> Iterator[str]:
    """Run one server process with its log in ``workdir``; yield its endpoint once ``probe`` answers HTTP."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_up(endpoint + probe, proc)
        yield endpoint
    finally:
        stop_process(proc)
        log.close()


def _create(server: S3Server, buckets: tuple[str, ...]) -> None:
    client = server.client()
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Any HTTP answer means the server listens."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{proc.args!r} did not answer within {START_TIMEOUT} s")


def _with_iam_user(server: S3Server) -> S3Server:
    import boto3

    iam = boto3.client(
        "iam", endpoint_url=server.endpoint, region_name=REGION,
        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
    )
    iam.create_user(UserName="telephone")
    key = iam.create_access_key(UserName="telephone")["AccessKey"]
    iam.put_user_policy(UserName="telephone", PolicyName="s3", PolicyDocument=POLICY)
    return S3Server(server.endpoint, key["AccessKeyId"], key["SecretAccessKey"])
