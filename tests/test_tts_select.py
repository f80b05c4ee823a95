"""Engine choice (pure) and construction: the preferred engine when it runs, the local voice always."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_server.tts.base import TTSEngine, VoiceSpec
from cloud_server.tts.chain import FallbackChain
from cloud_server.tts.chatterbox_engine import ChatterboxEngine, LoadedChatterbox
from cloud_server.tts.piper_engine import LocalVoiceEngine
from cloud_server.tts.select import EngineChoice, NoVoiceError, build_engines, choose_engines, detect_availability
from common.config import ChatterboxConfig, PiperConfig, TTSConfig
from common.speech import LocalVoice

ALL: dict[str, str | None] = {"chatterbox": None, "piper": None, "espeak": None}


def without(**why_not: str) -> dict[str, str | None]:
    return {**ALL, **why_not}


@pytest.mark.parametrize(
    ("preferred", "available", "expected"),
    [
        ("chatterbox", ALL, EngineChoice("chatterbox", ("piper", "espeak"))),
        ("piper", ALL, EngineChoice("piper", ("espeak",))),
        ("espeak", ALL, EngineChoice("espeak", ("piper",))),
        ("chatterbox", without(piper="no piper"), EngineChoice("chatterbox", ("espeak",))),
        (
            "chatterbox",
            without(chatterbox="not installed"),
            EngineChoice("piper", ("espeak",), "chatterbox unavailable: not installed"),
        ),
        (
            "piper",
            without(piper="voice missing"),
            EngineChoice("espeak", ("espeak",), "piper unavailable: voice missing"),
        ),
        (
            "chatterbox",
            {"chatterbox": "no torch", "piper": "no piper", "espeak": None},
            EngineChoice("espeak", ("espeak",), "chatterbox unavailable: no torch"),
        ),
    ],
)
def test_choose_engines(preferred: str, available: dict[str, str | None], expected: EngineChoice) -> None:
    assert choose_engines(preferred, available) == expected


def test_no_local_voice_at_all_is_an_error_naming_both() -> None:
    with pytest.raises(NoVoiceError, match="no piper.*no espeak"):
        choose_engines("chatterbox", {"chatterbox": None, "piper": "no piper", "espeak": "no espeak"})


def test_detect_availability_here_and_with_missing_files(tmp_path: Path) -> None:
    assert detect_availability(TTSConfig()) == ALL
    cfg = TTSConfig(
        chatterbox=ChatterboxConfig(checkpoint=str(tmp_path / "nockpt")),
        piper=PiperConfig(voice=str(tmp_path / "novoice.onnx")),
    )
    found = detect_availability(cfg)
    assert "nockpt" in (found["chatterbox"] or "") and "novoice.onnx" in (found["piper"] or "")
    assert found["espeak"] is None


def test_piper_preferred_speaks_piper() -> None:
    primary, fallback = build_engines(TTSConfig(engine="piper"))
    assert (primary.name, primary.degraded, primary.sample_rate) == ("piper", False, 22050)
    assert (fallback.name, fallback.sample_rate) == ("espeak", 22050)  # a sentence Piper fails on goes to espeak-ng
    assert b"".join(primary.synthesize("Hello, caller.", VoiceSpec()))


def test_missing_piper_voice_degrades_to_espeak(tmp_path: Path) -> None:
    primary, fallback = build_engines(TTSConfig(engine="piper", piper=PiperConfig(voice=str(tmp_path / "x.onnx"))))
    assert (primary.name, primary.degraded, fallback.name) == ("espeak", True, "espeak")
    assert "x.onnx" in (primary.degraded_reason or "")


def test_missing_checkpoint_degrades_to_the_local_voice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = TTSConfig(chatterbox=ChatterboxConfig(checkpoint=str(tmp_path / "nowhere"), device="cpu"))
    with caplog.at_level(logging.WARNING):
        primary, fallback = build_engines(cfg)
    assert (primary.name, primary.degraded, fallback.name) == ("piper", True, "espeak")
    assert "nowhere" in (primary.degraded_reason or "") and "nowhere" in caplog.text


def test_chatterbox_that_fails_to_load_degrades_to_the_local_voice(tmp_path: Path) -> None:
    broken = tmp_path / "broken-ckpt"
    broken.mkdir()  # exists, but holds no weights: the real from_local raises
    primary, _ = build_engines(TTSConfig(chatterbox=ChatterboxConfig(checkpoint=str(broken), device="cpu")))
    assert (primary.name, primary.degraded) == ("piper", True)
    assert "chatterbox failed to load" in (primary.degraded_reason or "")
    assert b"".join(primary.synthesize("Still here.", VoiceSpec()))


def test_chatterbox_primary_gets_a_fallback_at_its_own_rate(
    chatterbox_config: ChatterboxConfig, chatterbox_loaded: LoadedChatterbox
) -> None:
    primary, fallback = build_engines(
        TTSConfig(engine="chatterbox", chatterbox=chatterbox_config),
        loaders={"chatterbox": lambda cfg, _rate: ChatterboxEngine(cfg.chatterbox, chatterbox_loaded)},
    )
    assert (primary.name, primary.degraded, primary.sample_rate) == ("chatterbox", False, 24000)
    assert isinstance(fallback, FallbackChain)
    assert [(v.name, v.sample_rate) for v in fallback.engines] == [("piper", 24000), ("espeak", 24000)], "one rate"
    pcm = b"".join(fallback.synthesize("The line is busy, please hold.", VoiceSpec()))
    assert 1.0 < len(pcm) / 2 / 24000 < 5.0


class BrokenVoice(LocalVoice):
    """A local voice that fails on every text (as Piper does on some inputs), at the LocalVoice seam."""

    name = "piper"
    sample_rate = 22050

    def synthesize(self, text: str, cancel: threading.Event | None = None) -> Iterator[bytes]:
        raise RuntimeError("phonemizer choked")
        yield b""


class SilentModel(TTSEngine):
    """Stands in for the loaded Chatterbox (only its rate matters here)."""

    name = "chatterbox"

    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        yield bytes(4800)


def test_a_sentence_piper_fails_on_is_spoken_by_espeak(caplog: pytest.LogCaptureFixture) -> None:
    _, fallback = build_engines(
        TTSConfig(engine="chatterbox"),
        loaders={
            "chatterbox": lambda _cfg, _rate: SilentModel(),
            "piper": lambda _cfg, rate: LocalVoiceEngine(BrokenVoice(), sample_rate=rate),
        },
    )
    assert [v.name for v in fallback.engines] == ["piper", "espeak"]  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING):
        pcm = b"".join(fallback.synthesize("Still on the line.", VoiceSpec()))
    assert len(pcm) / 2 / fallback.sample_rate > 0.5  # espeak-ng spoke it
    assert "piper failed on a sentence" in caplog.text
