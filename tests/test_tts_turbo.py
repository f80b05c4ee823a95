"""Chatterbox Turbo for real, on its random-weight checkpoint (run last: it swaps the session's model slot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_server.tts.base import TTSError, VoiceSpec
from cloud_server.tts.chatterbox_engine import ChatterboxEngine
from cloud_server.tts.chatterbox_plan import SAMPLES_PER_TOKEN, token_budget
from tests.chatterbox_checkpoint import make_voice_clip

SENTENCE = "Hello there, this is the operator."
TURBO_SILENCE_TOKENS = 3
"""Turbo's generate() appends three silence tokens after the speech."""


def test_turbo_speaks_pcm16_at_24k_bounded_by_the_token_budget(turbo_engine: ChatterboxEngine) -> None:
    pcm = b"".join(turbo_engine.synthesize(SENTENCE, VoiceSpec(exaggeration=0.9, cfg_weight=0.0)))
    cfg = turbo_engine.cfg
    budget = token_budget(len(SENTENCE), cfg.max_tokens_per_char, cfg.min_tokens, cfg.max_tokens)
    assert (turbo_engine.name, turbo_engine.loaded.kind, turbo_engine.sample_rate) == ("chatterbox", "turbo", 24000)
    assert 0 < len(pcm) // 2 <= (budget + TURBO_SILENCE_TOKENS) * SAMPLES_PER_TOKEN
    assert len(pcm) % 2 == 0


def test_turbo_refuses_a_short_clip_with_a_clear_error(turbo_engine: ChatterboxEngine, tmp_path: Path) -> None:
    short = make_voice_clip(tmp_path / "short.wav", "Too short.")
    with pytest.raises(TTSError, match="longer than 5 seconds"):
        turbo_engine.prepare_voice(VoiceSpec(voice_id="shorty", clip=str(short)))
    assert not turbo_engine.loaded.lock.locked()
