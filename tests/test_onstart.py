"""The rendered onstart script: valid bash, shellcheck-clean, under Vast.ai's 16 KB limit, no secrets."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.vastai.onstart import MAX_ONSTART_BYTES, OnstartError, override_env, render
from deploy.vastai.settings import InstancePlan


@pytest.mark.parametrize("plan", [InstancePlan(), InstancePlan(chatterbox_model="turbo", ollama_model="qwen2.5:7b",
                                                                repo_ref="v1.2", container_port=9443)])
def test_rendered_onstart_passes_bash_n_and_shellcheck(plan: InstancePlan, tmp_path: Path) -> None:
    script = render(plan, "https://github.com/example/ai-telephone.git")
    assert len(script.encode()) < MAX_ONSTART_BYTES
    path = tmp_path / "onstart.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)
    assert shutil.which("shellcheck"), "scripts/setup installs shellcheck"
    checked = subprocess.run(["shellcheck", "--shell=bash", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout
    assert "@@" not in script.split("\n", 3)[3]  # every placeholder below the header was filled
    assert f"OLLAMA_MODEL={plan.ollama_model}" in script
    assert f"PORT={plan.container_port}" in script


def test_onstart_values_are_quoted_and_bad_ones_refused() -> None:
    script = render(InstancePlan(), "https://example.com/a repo.git".replace(" ", "%20"))
    assert "REPO_URL=https://example.com/a%20repo.git" in script
    assert "CHATTERBOX_PATTERNS='ve.safetensors" in script  # a word list stays one quoted value
    with pytest.raises(OnstartError, match="ollama_model"):
        render(InstancePlan(ollama_model="x; rm -rf /"), "https://example.com/r.git")
    with pytest.raises(OnstartError, match="repo_url"):
        render(InstancePlan(), "git@github.com:example/r.git")
    with pytest.raises(OnstartError, match="chatterbox"):
        render(InstancePlan(chatterbox_model="large"), "https://example.com/r.git")


def test_set_overrides_become_server_env_and_bad_ones_are_refused() -> None:
    assert override_env(("server.tts.engine=piper", "server.llm.keep_alive=1h")) == {
        "AI_TELEPHONE__SERVER__TTS__ENGINE": "piper", "AI_TELEPHONE__SERVER__LLM__KEEP_ALIVE": "1h"}
    for bad in ("pi.server_url=x", "server.tts.engine", "server.llm.model=a b", "server.x=$(reboot)"):
        with pytest.raises(OnstartError, match="--set"):
            override_env((bad,))


def test_onstart_keeps_ollama_on_loopback_and_takes_secrets_from_env() -> None:
    script = render(InstancePlan(), "https://example.com/r.git")
    assert "OLLAMA_ADDR=${AI_TELEPHONE_ONSTART_OLLAMA:-127.0.0.1:11434}" in script and "0.0.0.0:11434" not in script
    for name in ("AI_TELEPHONE_API_KEY", "AI_TELEPHONE_TLS_CERT_B64", "AI_TELEPHONE_TLS_KEY_B64"):
        assert f"env_value {name}" in script
    assert "requirements-server.txt" in script and 'runuser -u "$SVC_USER" -- "$APP_DIR/scripts/serve"' in script
    assert "haproxy" in script.split("apt-get install", 1)[1].split("\n", 2)[1]  # scripts/serve's front
    assert "ai-telephone-server.service" in script  # systemd where it exists, else the restart loop


def test_onstart_server_config_and_env_are_what_the_server_reads() -> None:
    """The config.yaml the onstart writes validates against common/config.py, and its env names
    are the ones scripts/serve reads (drift here breaks every deploy)."""
    import yaml

    from common.config import config_from_dict

    script = render(InstancePlan(ollama_model="qwen2.5:7b"), "https://example.com/r.git")
    yaml_doc = script.split('cat >"$ETC/config.yaml" <<YAML\n', 1)[1].split("\nYAML\n", 1)[0]
    env_doc = script.split('cat >"$ETC/server.env" <<ENV\n', 1)[1].split("\nENV\n", 1)[0]
    preamble = ("BIND_HOST=0.0.0.0 ETC=/etc/ai-telephone PORT=8000 OLLAMA_ADDR=127.0.0.1:11434 "
                "OLLAMA_MODEL=qwen2.5:7b CHATTERBOX_MODEL=standard HF_HOME=/var/lib/ai-telephone/hf\n")
    expanded = subprocess.run(["bash", "-c", preamble + f"cat <<YAML\n{yaml_doc}\nYAML\ncat <<ENV\n{env_doc}\nENV\n"],
                              capture_output=True, text=True, check=True, timeout=30).stdout
    yaml_text, env_text = expanded.split("AI_TELEPHONE_CONFIG=", 1)
    cfg = config_from_dict(yaml.safe_load(yaml_text))
    assert cfg.server.host == "0.0.0.0" and cfg.server.port == 8000
    assert cfg.server.api_key_file == "/etc/ai-telephone/api-key"
    assert (cfg.server.llm.backend, cfg.server.llm.model) == ("ollama", "qwen2.5:7b")
    assert cfg.server.llm.ollama_host == "http://127.0.0.1:11434"
    assert (cfg.server.tts.engine, cfg.server.tts.chatterbox.device) == ("chatterbox", "cuda")
    env = dict(line.split("=", 1) for line in ("AI_TELEPHONE_CONFIG=" + env_text).splitlines() if "=" in line)
    serve = (Path(__file__).resolve().parents[1] / "scripts/serve").read_text()
    for name in ("AI_TELEPHONE_BIND", "AI_TELEPHONE_TLS_CERT", "AI_TELEPHONE_TLS_KEY"):
        assert name in env and f"${{{name}:-}}" in serve
    assert env["AI_TELEPHONE_BIND"] == "0.0.0.0:8000"


def test_a_repo_url_with_a_token_is_refused_without_showing_the_token(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(OnstartError, match="credentials") as refused:
        render(InstancePlan(), "https://user:ghp_SECRET123@github.com/example/r.git")
    assert "ghp_SECRET123" not in str(refused.value) and "github.com/example/r.git" in str(refused.value)
    # A checkout cloned with a token in its origin deploys the same repository without it.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin",
                    "https://user:ghp_SECRET123@github.com/example/r.git"], check=True, timeout=30)
    from deploy.vastai.cli import default_repo_url

    url = default_repo_url(tmp_path)
    assert url == "https://github.com/example/r.git"
    assert "ghp_SECRET123" not in render(InstancePlan(), url)
    assert "ghp_SECRET123" not in caplog.text
