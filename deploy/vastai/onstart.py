"""Render onstart.sh with the values one instance needs, within Vast.ai's 16 KB onstart limit."""

from __future__ import annotations

import re
import shlex
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

from deploy.vastai.settings import InstancePlan

MAX_ONSTART_BYTES = 16 * 1024
"""Vast.ai refuses onstart scripts larger than this."""

CHATTERBOX_WEIGHTS = {
    "standard": (
        "ResembleAI/chatterbox",
        "ve.safetensors t3_cfg.safetensors s3gen.safetensors tokenizer.json conds.pt",
    ),
    "turbo": ("ResembleAI/chatterbox-turbo", "*.safetensors *.json *.txt *.pt"),
}
"""Hub repository and the files ``from_pretrained`` reads, per Chatterbox model."""

_PLACEHOLDER = re.compile(r"@@([A-Z_]+)@@")
_SAFE_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")


class OnstartError(ValueError):
    """The onstart script cannot be rendered from these settings."""


_OVERRIDE_KEY = re.compile(r"^server(\.[a-z0-9_]+)+$")
_OVERRIDE_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+-]*$")


def override_env(settings: tuple[str, ...]) -> dict[str, str]:
    """``server.tts.engine=piper`` pairs as the server's env overrides (AI_TELEPHONE__SERVER__TTS__ENGINE)."""
    env: dict[str, str] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not _OVERRIDE_KEY.match(key) or not _OVERRIDE_VALUE.match(value):
            raise OnstartError(f"--set {item!r}: expected server.some.key=value (value: letters, digits, ._:/@+-)")
        env["AI_TELEPHONE__" + key.upper().replace(".", "__")] = value
    return env


def without_credentials(url: str) -> str:
    """``url`` with any ``user:token@`` removed, so it can be logged or shown."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def render(plan: InstancePlan, repo_url: str) -> str:
    """The onstart script for ``plan``, every value shell-quoted; OnstartError when too big."""
    if plan.chatterbox_model not in CHATTERBOX_WEIGHTS:
        raise OnstartError(f"chatterbox model {plan.chatterbox_model!r}: expected one of standard, turbo")
    hub_repo, patterns = CHATTERBOX_WEIGHTS[plan.chatterbox_model]
    values = {
        "REPO_URL": repo_url,
        "REPO_REF": plan.repo_ref,
        "OLLAMA_MODEL": plan.ollama_model,
        "CHATTERBOX_REPO": hub_repo,
        "CHATTERBOX_PATTERNS": patterns,
        "CHATTERBOX_MODEL": plan.chatterbox_model,
        "PORT": str(plan.container_port),
    }
    for name in ("REPO_REF", "OLLAMA_MODEL"):
        if not _SAFE_WORD.match(values[name]):
            raise OnstartError(f"{name.lower()}: {values[name]!r} is not a plain name")
    if without_credentials(repo_url) != repo_url:
        # The onstart script is stored by Vast.ai and its clone step is logged on the instance.
        raise OnstartError(
            f"repo_url: {without_credentials(repo_url)!r} carries credentials (user:token@); "
            "the instance would store and log them: use a public https URL"
        )
    if not re.match(r"^https://[^\s'\"]+$", repo_url):
        raise OnstartError(f"repo_url: {repo_url!r} is not an https URL")
    template = resources.files("deploy.vastai").joinpath("onstart.sh").read_text(encoding="utf-8")
    script = _PLACEHOLDER.sub(
        lambda m: shlex.quote(values[m.group(1)]) if m.group(1) in values else m.group(0), template
    )
    # Only the header comment mentions the placeholder syntax itself.
    leftover = [m for m in _PLACEHOLDER.findall(script) if m != "NAMES"]
    if leftover:
        raise OnstartError(f"onstart.sh: no value for {', '.join(sorted(set(leftover)))}")
    size = len(script.encode("utf-8"))
    if size >= MAX_ONSTART_BYTES:
        raise OnstartError(f"onstart script is {size} bytes; Vast.ai accepts less than {MAX_ONSTART_BYTES}")
    return script
