"""A real S3-protocol server for the tests: moto's standalone server (``moto[server]``) as a subprocess on 127.0.0.1.

``auth=True`` makes it check signatures and IAM permissions after the set-up calls (an IAM user
with an access key, its policy and the bucket), so wrong credentials are refused as AWS would.
Without it, moto accepts any credentials, and presigned GETs work (with auth on, moto cannot
serve query-string-signed requests).
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

from tests.server_rig import free_port

START_TIMEOUT = 30.0
REGION = "us-east-1"
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
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(3 + len(buckets))  # user, key, policy, then the buckets
    log = open(workdir / "moto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_up(endpoint, proc)
        server = S3Server(endpoint, "AKIAPLACEHOLDER00000", "placeholder-secret")
        if auth:
            server = _with_iam_user(server)
        client = server.client()
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _wait_up(endpoint: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            requests.get(endpoint + "/moto-api/data.json", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer within {START_TIMEOUT} s")


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
