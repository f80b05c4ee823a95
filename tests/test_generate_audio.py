"""POST /generate-audio and GET /outputs as a user meets them: real HTTP, real Piper, real S3 servers (moto, s3rver)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import soundfile as sf

from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.ollama_standin import OllamaStandIn
from tests.s3_rig import S3Server, isolated_aws_env, moto_server, s3rver_server
from tests.server_rig import REPO_ROOT, write_yaml

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
TIMEOUT = 60
BUCKET = "phone-replies"
EXPIRES_SECONDS = 3  # X-Amz-Date has whole seconds, so a URL lives 2-3 s: room for the first fetch
KEY_LAYOUT = re.compile(r"replies/operator/\d{4}/\d{2}/\d{2}/[0-9a-f]{32}\.wav")
Start = Callable[..., RunningServer]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with moto_server(tmp_path_factory.mktemp("moto"), buckets=(BUCKET,)) as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[S3Server, str | None], None]:
    """Put one S3 server's credentials in this process's environment (where boto3's chain finds them)."""

    def use(server: S3Server, secret: str | None = None) -> None:
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            monkeypatch.delenv(name)
        for name, value in (isolated_aws_env(tmp_path) | server.env(secret)).items():
            monkeypatch.setenv(name, value)

    return use


def s3_server(start: Start, ollama: OllamaStandIn, tmp_path: Path, s3: S3Server, bucket: str = BUCKET,
              **storage: Any) -> RunningServer:
    cfg = {"bucket": bucket, "prefix": "replies", "endpoint_url": s3.endpoint, **storage}
    return start(server_config(ollama.url, tmp_path, storage={"s3": cfg}))


def generate(server: RunningServer, **body: Any) -> requests.Response:
    return requests.post(server.url + "/generate-audio", json={"text": "The train leaves at nine.", **body},
                         headers=AUTH, timeout=TIMEOUT)


def wav_seconds(data: bytes) -> float:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return len(samples) / rate


def object_key(url: str) -> str:
    return urlsplit(url).path.split(f"/{BUCKET}/", 1)[1]


def run_check(tmp_path: Path, storage: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m cloud_server check`` in its own process, as an operator runs it."""
    config = write_yaml(tmp_path / "check.yaml", {"server": {"data_dir": str(tmp_path / "data"), "storage": storage}})
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AI_TELEPHONE"))}
    full = clean | isolated_aws_env(tmp_path) | {"AI_TELEPHONE_CONFIG": str(config), "AI_TELEPHONE_API_KEY": "k"} | env
    return subprocess.run([sys.executable, "-m", "cloud_server", "check"], cwd=REPO_ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


def test_url_is_presigned_plays_without_the_key_and_is_reused(
    start_server: Start, ollama: OllamaStandIn, tmp_path: Path, s3: S3Server, aws_env: Any
) -> None:
    aws_env(s3)
    server = s3_server(start_server, ollama, tmp_path, s3)
    first = generate(server)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["character"] == "operator" and answer["format"] == "wav" and answer["reused"] is False
    assert KEY_LAYOUT.fullmatch(object_key(answer["audio_url"])), answer["audio_url"]
    assert "X-Amz-Signature" in answer["audio_url"] and answer["expires_at"]

    fetched = requests.get(answer["audio_url"], timeout=TIMEOUT)  # plain HTTP, no API key
    assert fetched.status_code == 200
    assert wav_seconds(fetched.content) == pytest.approx(answer["duration"], abs=0.01)
    assert answer["duration"] > 0.8

    stored = s3.client().list_objects_v2(Bucket=BUCKET, Prefix="replies/")["Contents"]
    again = generate(server).json()
    assert again["reused"] is True and object_key(again["audio_url"]) == object_key(answer["audio_url"])
    after = s3.client().list_objects_v2(Bucket=BUCKET, Prefix="replies/")["Contents"]
    assert [(o["Key"], o["LastModified"]) for o in after] == [(o["Key"], o["LastModified"]) for o in stored]

    other = generate(server, text="The bus leaves at ten.").json()
    assert object_key(other["audio_url"]) != object_key(answer["audio_url"])
    louder = generate(server, exaggeration=1.5).json()  # another setting is another file
    assert object_key(louder["audio_url"]) != object_key(answer["audio_url"])


def test_presigned_lifetime_is_what_was_asked_and_bounded(
    start_server: Start, ollama: OllamaStandIn, tmp_path: Path, s3: S3Server, aws_env: Any
) -> None:
    """The URL is signed for exactly ``expires_in`` (the refusal after it: the s3rver test below)."""
    aws_env(s3)
    server = s3_server(start_server, ollama, tmp_path, s3, max_presign_seconds=600)
    before = time.time()
    answer = generate(server, expires_in=2).json()
    query = parse_qs(urlsplit(answer["audio_url"]).query)
    assert query["X-Amz-Expires"] == ["2"]
    expires = datetime.fromisoformat(answer["expires_at"]).timestamp()
    assert before + 1 <= expires <= time.time() + 3
    default = parse_qs(urlsplit(generate(server).json()["audio_url"]).query)
    assert default["X-Amz-Expires"] == ["3600"] or default["X-Amz-Expires"] == ["600"]
    for bad in (0, 601, 1.5, "60", True):
        refused = generate(server, expires_in=bad)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_expires_in", bad
    public = generate(server, presigned=False)
    assert public.status_code == 400 and public.json()["error"]["code"] == "no_public_url"


def test_presigned_url_plays_until_it_expires_then_is_refused(
    start_server: Start, ollama: OllamaStandIn, tmp_path: Path, aws_env: Any
) -> None:
    """s3rver, unlike moto, refuses a presigned URL after ``X-Amz-Expires``, as AWS, MinIO and R2 do."""
    with s3rver_server(tmp_path / "s3rver", buckets=(BUCKET,)) as strict:
        aws_env(strict)
        server = s3_server(start_server, ollama, tmp_path, strict)
        answer = generate(server, expires_in=EXPIRES_SECONDS).json()
        fetched = requests.get(answer["audio_url"], timeout=TIMEOUT)  # plain HTTP, no key, in time
        assert fetched.status_code == 200, fetched.text
        assert wav_seconds(fetched.content) == pytest.approx(answer["duration"], abs=0.01)

        expires_at = datetime.fromisoformat(answer["expires_at"]).timestamp()
        time.sleep(min(max(0.0, expires_at - time.time()) + 1.0, EXPIRES_SECONDS + 2.0))  # just past it, bounded
        late = requests.get(answer["audio_url"], timeout=TIMEOUT)
        assert late.status_code == 403, "the expired URL was still served" if late.ok else late.text
        assert "<Code>AccessDenied</Code><Message>Request has expired</Message>" in late.text
        fresh = generate(server, expires_in=EXPIRES_SECONDS).json()  # the stored file is reused, newly signed
        assert fresh["reused"] is True
        assert requests.get(fresh["audio_url"], timeout=TIMEOUT).content == fetched.content


def test_public_url_only_when_configured(
    start_server: Start, ollama: OllamaStandIn, tmp_path: Path, s3: S3Server, aws_env: Any
) -> None:
    aws_env(s3)
    server = s3_server(start_server, ollama, tmp_path, s3, public_base_url="https://cdn.example.test/audio/")
    answer = generate(server, presigned=False).json()
    assert re.fullmatch(r"https://cdn\.example\.test/audio/replies/operator/[0-9/]{10}/[0-9a-f]{32}\.wav",
                        answer["audio_url"]), answer
    assert answer["expires_at"] is None


def test_missing_bucket_is_a_503_and_the_check_says_so(
    start_server: Start, ollama: OllamaStandIn, tmp_path: Path, s3: S3Server, aws_env: Any
) -> None:
    aws_env(s3)
    server = s3_server(start_server, ollama, tmp_path, s3, bucket="no-such-bucket")
    refused = generate(server)
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "storage_unavailable" and "'no-such-bucket' does not exist" in error["message"]
    assert refused.headers["Retry-After"]
    health = server.health()
    assert health["storage"]["ok"] is False and "does not exist" in health["storage"]["problem"]
    assert generate(server, return_format="base64").status_code == 200  # speech itself still works
    assert BUCKET in [b["Name"] for b in s3.client().list_buckets()["Buckets"]]
    assert "no-such-bucket" not in [b["Name"] for b in s3.client().list_buckets()["Buckets"]]

    check = run_check(tmp_path, {"s3": {"bucket": "no-such-bucket", "endpoint_url": s3.endpoint}}, s3.env())
    assert check.returncode == 1
    assert check.stderr.strip() == "cloud_server check: storage: bucket 'no-such-bucket' does not exist " \
                                   "(server.storage.s3.bucket)"
    ok = run_check(tmp_path, {"s3": {"bucket": BUCKET, "endpoint_url": s3.endpoint}}, s3.env())
    assert ok.returncode == 0, ok.stderr
    assert f"ok: storage: s3://{BUCKET}/ai-telephone reachable" in ok.stdout.splitlines()


def test_wrong_credentials_are_a_503_and_the_check_says_so(
    start_server: Start, ollama: OllamaStandIn, tmp_path: Path, aws_env: Any
) -> None:
    with moto_server(tmp_path / "moto-auth", buckets=(BUCKET,), auth=True) as guarded:
        aws_env(guarded, "not-the-secret")
        server = s3_server(start_server, ollama, tmp_path, guarded)
        refused = generate(server)
        assert refused.status_code == 503, refused.text
        assert "refused the credentials" in refused.json()["error"]["message"]
        assert "not-the-secret" not in refused.text
        assert guarded.client().list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0

        storage = {"s3": {"bucket": BUCKET, "endpoint_url": guarded.endpoint}}
        wrong = run_check(tmp_path, storage, guarded.env("not-the-secret"))
        assert wrong.returncode == 1 and len(wrong.stderr.strip().splitlines()) == 1
        assert wrong.stderr.startswith(f"cloud_server check: storage: S3 refused the credentials for bucket '{BUCKET}'")
        assert "not-the-secret" not in wrong.stderr + wrong.stdout
        right = run_check(tmp_path, storage, guarded.env())
        assert right.returncode == 0, right.stderr
        none = run_check(tmp_path, storage, {})
        assert none.returncode == 1 and "no AWS credentials found" in none.stderr


def test_without_s3_files_are_served_from_the_data_directory(
    start_server: Start, ollama: OllamaStandIn, tmp_path: Path
) -> None:
    server = start_server(server_config(ollama.url, tmp_path, storage={"local": {"max_age_seconds": 3600}}))
    answer = generate(server).json()
    name = answer["audio_url"].rsplit("/", 1)[1]
    assert answer["audio_url"] == f"{server.url}/outputs/{name}"
    assert requests.get(answer["audio_url"], timeout=TIMEOUT).status_code == 401
    fetched = requests.get(answer["audio_url"], headers=AUTH, timeout=TIMEOUT)
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "audio/wav"
    assert wav_seconds(fetched.content) == pytest.approx(answer["duration"], abs=0.01)
    assert generate(server).json()["reused"] is True
    outputs = tmp_path / "data" / "outputs"
    assert sorted(p.name for p in outputs.iterdir()) == [name]  # no temporary debris either
    for bad in ("..%2Fcharacter_voices.json", name + "%0A", name.upper(), "x.wav", name[:-4] + ".txt"):
        got = requests.get(f"{server.url}/outputs/{bad}", headers=AUTH, timeout=TIMEOUT)
        assert got.status_code == 404 and got.json()["error"]["code"] in ("unknown_output", "not_found"), bad

    old = time.time() - 7200
    os.utime(outputs / name, (old, old))
    assert requests.get(answer["audio_url"], headers=AUTH, timeout=TIMEOUT).status_code == 404
    fresh = generate(server, text="A new announcement.").json()
    assert fresh["reused"] is False
    assert sorted(p.name for p in outputs.iterdir()) == [fresh["audio_url"].rsplit("/", 1)[1]]  # the old one went


def test_outputs_stay_within_their_disk_budget(start_server: Start, ollama: OllamaStandIn, tmp_path: Path) -> None:
    server = start_server(server_config(ollama.url, tmp_path, storage={"local": {"max_bytes": 150_000}}))
    names = [generate(server, text=f"Platform {n} is now boarding.").json()["audio_url"].rsplit("/", 1)[1]
             for n in ("one", "two", "three", "four")]
    kept = sorted(p.name for p in (tmp_path / "data" / "outputs").iterdir())
    assert names[-1] in kept and names[0] not in kept
    assert sum(p.stat().st_size for p in (tmp_path / "data" / "outputs").iterdir()) <= 150_000


def test_base64_and_bad_requests(start_server: Start, ollama: OllamaStandIn, tmp_path: Path) -> None:
    server = start_server(server_config(ollama.url, tmp_path))
    import base64

    answer = generate(server, return_format="base64", character="operator").json()
    assert wav_seconds(base64.b64decode(answer["audio_base64"])) == pytest.approx(answer["duration"], abs=0.01)
    assert not (tmp_path / "data" / "outputs").exists() or not any((tmp_path / "data" / "outputs").iterdir())
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"text": ""}, 400, "empty_field"),
        ({"text": "🙂 ..."}, 400, "nothing_to_say"),
        ({"return_format": "mp3"}, 400, "bad_return_format"),
        ({"emotion": 9}, 400, "bad_emotion"),
        ({"presigned": "yes"}, 400, "bad_field"),
        ({"character": "nobody"}, 404, "unknown_character"),
        ({"text": "x" * 5000}, 413, "text_too_long"),
    ]
    for body, status, code in cases:
        got = generate(server, **body)
        assert (got.status_code, got.json()["error"]["code"]) == (status, code), body
    assert requests.post(server.url + "/generate-audio", json={"text": "hi"}, timeout=TIMEOUT).status_code == 401
    assert server.health()["storage"]["backend"] == "local"
