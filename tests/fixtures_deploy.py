"""Fixtures for the deploy tests: an isolated HOME for the CLI and a runner for `python -m deploy.vastai`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VAST_KEY = "vast-test-key-0123456789"

RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def deploy_env(tmp_path: Path) -> dict[str, str]:
    """Environment for the CLI: its own HOME and XDG dirs (the vastai SDK reads its key file there)."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "AI_TELEPHONE", "XDG_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               VAST_API_KEY=VAST_KEY, PYTHONPATH=str(REPO))
    return env


@pytest.fixture
def run_cli(deploy_env: dict[str, str]) -> RunCli:
    """Run `python -m deploy.vastai --url URL ARGS...`; returns the finished process (stdout, stderr)."""

    def run(url: str, *args: str, stdin: str = "", env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "deploy.vastai", "--url", url, *args], cwd=REPO,
                              env=env or deploy_env, input=stdin, capture_output=True, text=True, timeout=timeout)

    return run


FAST = ("--repo-url", "https://example.invalid/ai-telephone.git", "--poll", "0.05", "--start-timeout", "3",
        "--health-timeout", "2")
"""`up` flags for tests: quick polls and short timeouts."""
