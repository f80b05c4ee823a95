"""The console commands in pyproject.toml name functions that exist (a rename would break the installed commands)."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_console_entry_point_resolves_to_a_callable() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"ai-telephone-phone", "ai-telephone-server", "ai-telephone-deploy"}
    for name, target in scripts.items():
        module_name, _, attribute = target.partition(":")
        function = getattr(importlib.import_module(module_name), attribute, None)
        assert callable(function), f"{name} = {target!r} does not name a function"


def test_scripts_test_type_checks_before_the_tests() -> None:
    script = (ROOT / "scripts" / "test").read_text()
    assert script.index("ruff\" check") < script.index("mypy") < script.index("pytest")
