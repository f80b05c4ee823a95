"""Prometheus metrics: per-app registry (several apps can live in one test process), turn timings, route counters.

Turn timings arrive from the reply pipeline's listener hook; route counters from an
``after_request`` hook keyed by the URL rule (``/voices/<voice_id>``, not the raw path, so a
caller cannot blow up the label set).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

_LOGGER = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
_RTF_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)


class Metrics:
    """Every metric the server exports, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry

        def seconds(name: str, doc: str) -> Histogram:
            return Histogram(f"ai_telephone_{name}_seconds", doc, registry=r, buckets=_LATENCY_BUCKETS)

        self.stt = seconds("stt", "Server-side transcription of one upload.")
        self.llm_first_token = seconds("llm_first_token", "From the start of a turn to the LLM's first token.")
        self.llm_reply = seconds("llm_reply", "From the start of a turn to the LLM's last token.")
        self.tts_sentence = seconds("tts_sentence", "Synthesis of one sentence.")
        self.first_audio = seconds("time_to_first_audio", "From the start of a turn to its first audio bytes.")
        self.speech_total = seconds("speech_request", "Whole synthesis of one /v1/audio/speech request.")
        self.rtf = Histogram(
            "ai_telephone_tts_real_time_factor",
            "Synthesis time divided by the length of the audio it made (below 1 is faster than real time).",
            registry=r,
            buckets=_RTF_BUCKETS,
        )
        self.requests = Counter(
            "ai_telephone_requests", "Requests answered, by route and HTTP status.", ["route", "status"], registry=r
        )
        self.fallbacks = Counter(
            "ai_telephone_fallbacks", "Degraded answers, by kind (tts_sentence, llm_apology).", ["kind"], registry=r
        )
        self.queue_rejections = Counter(
            "ai_telephone_queue_rejections", "Requests refused with 503 because every voice slot was busy.", registry=r
        )
        self.turns = Counter("ai_telephone_turns", "Spoken replies finished, by outcome.", ["outcome"], registry=r)

    def observe_turn(self, stats: Any) -> None:
        """Record one finished turn (a ``reply.TurnStats``)."""
        if stats.llm_first_token_seconds is not None:
            self.llm_first_token.observe(stats.llm_first_token_seconds)
        if stats.llm_seconds is not None:
            self.llm_reply.observe(stats.llm_seconds)
        if stats.first_audio_seconds is not None:
            self.first_audio.observe(stats.first_audio_seconds)
        self.observe_synthesis(stats.sentence_seconds, stats.audio_seconds)
        if stats.fallback_sentences:
            self.fallbacks.labels("tts_sentence").inc(stats.fallback_sentences)
        if stats.llm_failed:
            self.fallbacks.labels("llm_apology").inc()
        self.turns.labels("cancelled" if stats.cancelled else "llm_failed" if stats.llm_failed else "ok").inc()

    def observe_synthesis(self, sentence_seconds: list[float], audio_seconds: float) -> None:
        """Per-sentence synthesis times, and the real-time factor of them all."""
        for took in sentence_seconds:
            self.tts_sentence.observe(took)
        if audio_seconds > 0 and sentence_seconds:
            self.rtf.observe(sum(sentence_seconds) / audio_seconds)

    def observe_response(self, route: str, status: int, headers: Any) -> None:
        """Count one answered request; a 503 with Retry-After is a queue rejection."""
        self.requests.labels(route, str(status)).inc()
        if status == 503 and "Retry-After" in headers:
            self.queue_rejections.inc()

    def exposition(self) -> Response:
        """The text format Prometheus scrapes."""
        return Response(generate_latest(self.registry), mimetype=CONTENT_TYPE_LATEST)


def count_responses(app: Flask, metrics: Metrics) -> None:
    """Count every response of ``app`` by its URL rule and status."""

    @app.after_request
    def _count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.observe_response(rule, response.status_code, response.headers)
        return response
