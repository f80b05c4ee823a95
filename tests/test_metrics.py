"""Each app counts its own requests and turn timings in Prometheus' text format."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Flask, Response
from prometheus_client.parser import text_string_to_metric_families

from cloud_server.metrics import Metrics, count_responses


@dataclass
class Stats:
    """The fields of reply.TurnStats that metrics read."""

    llm_first_token_seconds: float | None = 0.4
    llm_seconds: float | None = 1.5
    first_audio_seconds: float | None = 0.9
    audio_seconds: float = 4.0
    sentence_seconds: list[float] = field(default_factory=lambda: [0.5, 1.5])
    fallback_sentences: int = 0
    llm_failed: bool = False
    cancelled: bool = False


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().get_data(as_text=True)
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def app_with_metrics() -> tuple[Flask, Metrics]:
    app = Flask(__name__)
    metrics = Metrics()
    count_responses(app, metrics)

    @app.get("/voices/<voice_id>")
    def voice(voice_id: str) -> str:
        return voice_id

    @app.post("/busy")
    def busy() -> Response:
        return Response("{}", status=503, headers={"Retry-After": "3"})

    return app, metrics


def test_routes_counted_by_rule_not_raw_path() -> None:
    app, metrics = app_with_metrics()
    client = app.test_client()
    for name in ["a", "b", "c"]:
        assert client.get(f"/voices/{name}").status_code == 200
    client.get("/nope")
    client.post("/busy")
    got = samples(metrics)
    assert got[("ai_telephone_requests_total", (("route", "/voices/<voice_id>"), ("status", "200")))] == 3
    assert got[("ai_telephone_requests_total", (("route", "unmatched"), ("status", "404")))] == 1
    assert got[("ai_telephone_queue_rejections_total", ())] == 1


def test_turn_timings_and_fallbacks() -> None:
    metrics = Metrics()
    metrics.observe_turn(Stats())
    metrics.observe_turn(Stats(fallback_sentences=2, llm_failed=True, llm_seconds=None))
    got = samples(metrics)
    assert got[("ai_telephone_llm_first_token_seconds_count", ())] == 2
    assert got[("ai_telephone_llm_reply_seconds_count", ())] == 1
    assert got[("ai_telephone_tts_sentence_seconds_count", ())] == 4
    assert got[("ai_telephone_tts_sentence_seconds_sum", ())] == 4.0
    assert got[("ai_telephone_tts_real_time_factor_sum", ())] == 1.0  # (0.5 + 1.5) / 4 s, twice
    assert got[("ai_telephone_time_to_first_audio_seconds_bucket", (("le", "1.0"),))] == 2
    assert got[("ai_telephone_fallbacks_total", (("kind", "tts_sentence"),))] == 2
    assert got[("ai_telephone_fallbacks_total", (("kind", "llm_apology"),))] == 1
    assert got[("ai_telephone_turns_total", (("outcome", "llm_failed"),))] == 1


def test_two_apps_keep_separate_registries() -> None:
    first, second = Metrics(), Metrics()
    first.stt.observe(0.3)
    assert samples(first)[("ai_telephone_stt_seconds_count", ())] == 1
    assert samples(second)[("ai_telephone_stt_seconds_count", ())] == 0
