"""common.atomic: a write that fails half-way leaves the old file and no debris."""

from __future__ import annotations

import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from common.atomic import atomic_path, atomic_write

ROOT = Path(__file__).resolve().parents[1]


def _small_file_limit() -> None:
    """In the child: files may not grow past 64 KiB (the kernel refuses the write: a full disk)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))


def test_a_write_that_fails_half_way_keeps_the_old_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    target.write_text('{"old": true}')
    code = f"from common.atomic import atomic_write; atomic_write({str(target)!r}, b'x' * 1_000_000)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, preexec_fn=_small_file_limit, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "File too large" in done.stderr, "the write did not fail half-way"
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]


def test_an_exception_inside_the_block_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "voice.wav"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a ne")
        raise RuntimeError("the encoder crashed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["voice.wav"]


def test_a_new_file_appears_whole_with_the_mode_asked_for(tmp_path: Path) -> None:
    secret = tmp_path / "deep" / "api-key"
    atomic_write(secret, "s3cret\n")
    assert secret.read_text() == "s3cret\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    public = tmp_path / "cert.pem"
    atomic_write(public, b"cert", mode=0o644)
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem", "deep"]
