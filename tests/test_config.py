"""The config tree: defaults, validation naming the dotted key, environment overrides, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError, config_from_dict, load_config, resolve_api_key

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_config_yaml_is_valid_and_matches_the_defaults_it_documents() -> None:
    cfg = load_config(ROOT / "config.yaml", env={})
    assert cfg.server.tts.engine == "chatterbox"
    assert cfg.server.llm.backend == "ollama"
    assert cfg.pi.vad.trailing_silence_seconds == 0.6
    assert "operator" in cfg.server.characters


def test_the_shipped_config_yaml_has_seed_000s_six_characters_written_for_a_telephone() -> None:
    characters = load_config(ROOT / "config.yaml", env={}).server.characters
    assert sorted(characters) == ["assistant", "echo", "luna", "narrator", "operator", "sage", "zephyr"]
    for character_id, character in characters.items():
        assert character.voice_clip is None, character_id  # the default voice: no clip that may not exist
        assert "No lists, no markdown" in character.persona, character_id
        assert character.greeting and character.display_name.lower() == character_id, character_id
    assert len({(c.exaggeration, c.temperature, c.cfg_weight) for c in characters.values()}) >= 5  # each its own manner


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"pi": {"vad": {"threshold": "high"}}}, "pi.vad.threshold: expected a number, got 'high'"),
        ({"server": {"limits": {"queue_depth": 2.5}}}, "server.limits.queue_depth: expected an integer"),
        ({"server": {"tts": {"engine": "siri"}}}, "server.tts.engine: expected one of chatterbox, piper, espeak"),
        ({"server": {"llm": {"modle": "x"}}}, "server.llm.modle: unknown setting"),
        ({"pi": {"hook": {"pull_up": "yes"}}}, "pi.hook.pull_up: expected true or false"),
        ({"server": {"characters": {"bob": {"exaggeration": "lots"}}}}, "server.characters.bob.exaggeration"),
        ({"server": "nope"}, "server: expected a mapping"),
    ],
)
def test_bad_settings_are_named_by_their_dotted_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert message in str(err.value)


def test_environment_overrides_win_and_arrive_typed() -> None:
    env = {
        "AI_TELEPHONE__SERVER__LIMITS__QUEUE_DEPTH": "9",
        "AI_TELEPHONE__PI__HOOK__PULL_UP": "false",
        "AI_TELEPHONE__SERVER__LLM__MODEL": "llama3.1:8b",
        "OLLAMA_HOST": "10.9.8.7:11434",
        "AI_TELEPHONE_SERVER": "https://gpu.example:8443",
    }
    cfg = config_from_dict({"server": {"limits": {"queue_depth": 2}}}, env)
    assert cfg.server.limits.queue_depth == 9
    assert cfg.pi.hook.pull_up is False
    assert cfg.server.llm.model == "llama3.1:8b"
    assert cfg.server.llm.ollama_host == "http://10.9.8.7:11434"
    assert cfg.pi.server_url == "https://gpu.example:8443"
    with pytest.raises(ConfigError, match="server.limits.queue_depth"):
        config_from_dict({}, {"AI_TELEPHONE__SERVER__LIMITS__QUEUE_DEPTH": "many"})


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        (tmp_path / "c.yaml").write_text("server: [unclosed\n")
        load_config(tmp_path / "c.yaml", env={})
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml", env={})
    (tmp_path / "from-env.yaml").write_text("server:\n  port: 9001\n")
    assert load_config(env={"AI_TELEPHONE_CONFIG": str(tmp_path / "from-env.yaml")}).server.port == 9001


def test_the_api_key_comes_from_the_environment_or_a_file_never_the_yaml(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("file-key\n")
    assert resolve_api_key(str(key_file), env={"AI_TELEPHONE_API_KEY": "env-key"}) == "env-key"
    assert resolve_api_key(str(key_file), env={}) == "file-key"
    assert resolve_api_key(None, env={}) is None
    with pytest.raises(ConfigError, match="api_key_file"):
        resolve_api_key(str(tmp_path / "absent"), env={})
    with pytest.raises(ConfigError, match="unknown setting"):
        config_from_dict({"server": {"api_key": "secret"}})
