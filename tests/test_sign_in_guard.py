"""Guessing the key at the console's sign-in: repeated wrong keys from one address get 429 with Retry-After."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import requests

from cloud_server.sign_in_guard import MAX_ADDRESSES, SignInGuard
from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.ollama_standin import OllamaStandIn

TIMEOUT = 30


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_locked_out_after_enough_wrong_keys_and_only_for_a_while() -> None:
    clock = Clock()
    guard = SignInGuard(max_failures=3, lockout_seconds=60, clock=clock)
    guard.failed("203.0.113.7")
    guard.failed("203.0.113.7")
    assert guard.retry_after("203.0.113.7") is None
    guard.failed("203.0.113.7")
    assert guard.retry_after("203.0.113.7") == 60
    assert guard.retry_after("198.51.100.2") is None  # someone else is not held up
    clock.now += 59.5
    assert guard.retry_after("203.0.113.7") == 1  # rounded up: never "try again in 0 s" while still locked
    clock.now += 0.5
    assert guard.retry_after("203.0.113.7") is None
    guard.failed("203.0.113.7")  # the count started again after the lockout
    assert guard.retry_after("203.0.113.7") is None


def test_wrong_keys_spread_out_or_followed_by_the_right_key_never_lock() -> None:
    clock = Clock()
    guard = SignInGuard(max_failures=3, lockout_seconds=60, clock=clock)
    for _ in range(5):  # a typo a minute
        guard.failed("203.0.113.7")
        clock.now += 61
    assert guard.retry_after("203.0.113.7") is None
    guard.failed("203.0.113.7")
    guard.failed("203.0.113.7")
    guard.succeeded("203.0.113.7")
    guard.failed("203.0.113.7")
    assert guard.retry_after("203.0.113.7") is None
    for i in range(MAX_ADDRESSES + 10):  # addresses without end do not grow memory without end
        guard.failed(f"addr-{i}")
    assert len(guard._by_address) == MAX_ADDRESSES


def sign_in(url: str, key: str, forwarded_for: str | None = None) -> requests.Response:
    browser = requests.Session()
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    form = browser.get(url + "/", timeout=TIMEOUT).text
    nonce = re.search(r'name="login_nonce" value="([^"]+)"', form)
    assert nonce
    return browser.post(url + "/console/sign-in", data={"key": key, "login_nonce": nonce.group(1)},
                        headers=headers, allow_redirects=False, timeout=TIMEOUT)


def test_the_sign_in_answers_429_after_wrong_keys_and_takes_the_right_key_later(
    start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Path
) -> None:
    server = start_server(server_config(ollama.url, tmp_path,
                                        console={"sign_in_failures": 3, "sign_in_lockout_seconds": 1.0}))
    assert [sign_in(server.url, f"guess-{i}").status_code for i in range(3)] == [401, 401, 401]
    refused = sign_in(server.url, TEST_KEY)  # the right key, but too soon
    assert refused.status_code == 429 and "Too many wrong keys" in refused.text
    assert "ai_telephone_console" not in refused.cookies
    wait = int(refused.headers["Retry-After"])
    assert wait == 1
    # Behind scripts/serve's HAProxy each caller is told apart by the X-Forwarded-For it sets.
    assert sign_in(server.url, TEST_KEY, forwarded_for="198.51.100.2").status_code == 303
    time.sleep(wait)
    accepted = sign_in(server.url, TEST_KEY)
    assert accepted.status_code == 303 and "ai_telephone_console" in accepted.cookies
