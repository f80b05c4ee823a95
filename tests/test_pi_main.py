"""``python -m pi_client`` as users start it: a bad setting is one clear line; keyboard mode on a file sound card."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common.wav import read_wav_pcm16
from tests.alsa_rig import AlsaRig
from tests.fixtures_pi import PI_RATE, silence
from tests.server_rig import REPO_ROOT, free_port, pi_config, write_yaml


def run_main(*args: str, env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pi_client", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_TELEPHONE")}
    return {**env, **extra}


def test_a_bad_setting_exits_1_with_one_line_naming_it(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "bad.yaml", {"pi": {"vad": {"threshold": "high"}}})
    result = run_main("--config", str(config), env=base_env(AI_TELEPHONE_API_KEY="k"))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pi.vad.threshold" in lines[0], result.stderr


def test_no_api_key_exits_1_naming_the_variable(tmp_path: Path) -> None:
    result = run_main("--config", str(pi_config(tmp_path)), env=base_env())
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "AI_TELEPHONE_API_KEY" in lines[0], result.stderr


def test_a_bad_server_url_exits_1_naming_it(tmp_path: Path) -> None:
    result = run_main(
        "--config", str(pi_config(tmp_path)), "--server", "localhost:8000", env=base_env(AI_TELEPHONE_API_KEY="k")
    )
    assert result.returncode == 1
    assert "pi.server_url" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_bad_directory_number_or_dial_exits_1_naming_it(tmp_path: Path) -> None:
    env = base_env(AI_TELEPHONE_API_KEY="k")
    config = pi_config(tmp_path, directory={"7a": "luna"})
    result = run_main("--config", str(config), env=env)
    assert result.returncode == 1
    assert "pi.directory" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = run_main("--config", str(pi_config(tmp_path)), "--dial", "7", env=env)  # no file mode
    assert result.returncode == 1
    assert "--dial" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def _aplay_pids_using(conf: Path) -> list[int]:
    """aplay processes started with this rig's ALSA config (other tests' players are not ours)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"aplay") and str(conf).encode() in environ:
            pids.append(int(entry.name))
    return pids


def test_keyboard_mode_greets_through_aplay_and_stops_cleanly_on_sigterm(
    alsa_rig: AlsaRig, call_whisper: Any, tmp_path: Path
) -> None:
    # The "microphone" hears silence; the earpiece is aplay into the rig's WAV file; no server runs.
    alsa_rig.feed(silence(2.0))
    config = pi_config(tmp_path, vad={"no_speech_timeout_seconds": 600})
    env = {**alsa_rig.env(), "AI_TELEPHONE_API_KEY": "k", "AI_TELEPHONE_CONFIG": str(config), "TQDM_DISABLE": "1"}
    env["AI_TELEPHONE_SERVER"] = f"http://127.0.0.1:{free_port()}"
    phone = subprocess.Popen(
        [sys.executable, "-m", "pi_client", "--keyboard", "--debug"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(phone.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()

    def wait_line(fragment: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(fragment in line for line in lines):
            assert phone.poll() is None, "".join(lines)[-3000:]
            assert time.monotonic() < deadline, f"no {fragment!r} in:\n" + "".join(lines)[-3000:]
            time.sleep(0.05)

    try:
        wait_line("Ready: server", 120)
        assert phone.stdin is not None
        phone.stdin.write("\n")  # Enter: the handset is lifted
        phone.stdin.flush()
        wait_line("greeting --Played--> listening", 60)
        # The file device has no real-time pacing: the "microphone" floods silence while listening.
        # Hang up first (the capture stops), then stop the service as systemd does.
        phone.stdin.write("\n")
        phone.stdin.flush()
        wait_line("handset put down", 60)
        phone.send_signal(signal.SIGTERM)
        try:
            assert phone.wait(timeout=30) == 0
        except subprocess.TimeoutExpired:
            raise AssertionError("no exit after SIGTERM:\n" + "".join(lines)[-3000:]) from None
    finally:
        if phone.poll() is None:
            phone.kill()
            phone.wait(timeout=10)
    reader.join(timeout=5)
    log = "".join(lines)
    assert "handset lifted" in log and "Stopping" in log
    assert not _aplay_pids_using(alsa_rig.conf)
    pcm, _ = read_wav_pcm16(str(alsa_rig.outfile), PI_RATE)
    heard = call_whisper.transcribe(pcm).lower()
    assert "listening" in heard, heard  # "Hello? Go ahead, I'm listening."
