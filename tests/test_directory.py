"""Dialed-number matching: complete on a unique match, on the digit timeout or on #; unknown numbers say so."""

from __future__ import annotations

import pytest

from common.config import ConfigError, config_from_dict
from pi_client.telephone.directory import Dialed, Directory, NumberCollector

ENTRIES = {"0": "operator", "7": "luna", "42": "deep", "420": "smoke", "4201": "clerk"}
TIMEOUT = 4.0


def dial(keys: str, gap: float = 0.5, entries: dict[str, str] = ENTRIES) -> tuple[Dialed | None, float]:
    """Press ``keys`` ``gap`` seconds apart; return the first completed number and when it completed."""
    collector = NumberCollector(Directory(entries), TIMEOUT)
    now = 0.0
    for key in keys:
        result = collector.key(key, now)
        if result is not None:
            return result, now
        now += gap
    deadline = collector.deadline
    if deadline is None:
        return None, now
    return collector.tick(deadline), deadline


def test_a_unique_match_completes_at_the_last_digit() -> None:
    assert dial("7") == (Dialed("7", "luna"), 0.0)
    assert dial("0") == (Dialed("0", "operator"), 0.0)
    assert dial("4201") == (Dialed("4201", "clerk"), 1.5)


def test_a_match_that_a_longer_entry_begins_with_waits_for_the_timeout_or_hash() -> None:
    assert dial("42") == (Dialed("42", "deep"), 0.5 + TIMEOUT)
    assert dial("420") == (Dialed("420", "smoke"), 1.0 + TIMEOUT)
    assert dial("42#") == (Dialed("42", "deep"), 1.0)


def test_no_completion_before_the_timeout() -> None:
    collector = NumberCollector(Directory(ENTRIES), TIMEOUT)
    assert collector.key("4", 10.0) is None
    assert collector.tick(10.0 + TIMEOUT - 0.01) is None
    assert collector.number == "4"
    assert collector.tick(10.0 + TIMEOUT) == Dialed("4", None)
    assert collector.deadline is None  # a fresh start


def test_an_unknown_number_says_so() -> None:
    result, _ = dial("555#")
    assert result == Dialed("555", None)
    assert result is not None and not result.known
    assert dial("99") == (Dialed("99", None), 0.5 + TIMEOUT)


def test_hash_alone_and_other_keys_do_nothing() -> None:
    collector = NumberCollector(Directory(ENTRIES), TIMEOUT)
    assert collector.key("#", 0.0) is None
    assert collector.key("*", 0.1) is None
    assert collector.key("A", 0.2) is None
    assert collector.deadline is None
    assert collector.key("7", 0.3) == Dialed("7", "luna")


def test_an_empty_directory_is_false_so_the_phone_skips_dialing() -> None:
    assert not Directory({})
    assert Directory(config_from_dict({"pi": {"directory": {0: "operator"}}}).pi.directory).lookup("0").known


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"12a": "x"}, "pi.directory: '12a' is not a number"),
        ({"": "x"}, "pi.directory: '' is not a number"),
        ({"#1": "x"}, "pi.directory: '#1' is not a number"),
        ({"5": " "}, "pi.directory.5: expected a character id"),
    ],
)
def test_bad_entries_are_named(entries: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Directory(entries)


def test_the_config_rejects_a_non_string_character() -> None:
    with pytest.raises(ConfigError, match="pi.directory.7: expected a string"):
        config_from_dict({"pi": {"directory": {"7": ["luna"]}}})
