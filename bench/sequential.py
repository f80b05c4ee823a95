"""The seed's design, kept only as a baseline: the whole LLM reply, then all of its speech, then send.

Mounted on the same app as ``/bench/sequential``, so it uses the very LLM client, voice engines,
persona and sentence chunks the streamed ``/process-text`` uses; only the order differs. Each chunk
is synthesized on its own (as the streamed path does) so both designs produce the same audio and
the comparison isolates the design, not Chatterbox's quality on long texts.
"""

from __future__ import annotations

import uuid

from flask import Flask, Response

from cloud_server.errors import ApiError
from cloud_server.pipeline.reply import Turn
from cloud_server.pipeline.sentences import SentenceSplitter
from cloud_server.routes.request import json_body, require_key
from cloud_server.services import services
from common.wav import wav_header

SEQUENTIAL_PATH = "/bench/sequential"


def add_sequential_route(app: Flask) -> None:
    """Add ``POST /bench/sequential`` (same body and key as /process-text); call before serving."""
    app.add_url_rule(SEQUENTIAL_PATH, "bench_sequential", _sequential, methods=["POST"])


def _sequential() -> Response:
    require_key()
    svc = services()
    body = json_body(svc.config.server.limits.max_body_bytes)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "missing_field", "'text' is required.")
    character_id, character = svc.characters.get(None)
    turn = Turn(
        text=text.strip(),
        session_id=uuid.uuid4().hex,
        character_id=character_id,
        character=character,
        voice=svc.characters.voice_spec(character_id),
    )
    # 1. The whole reply from the LLM.
    reply = "".join(svc.llm.stream_reply(svc.pipeline.messages(turn)))
    # 2. All of its speech.
    splitter = SentenceSplitter(svc.config.server.sentences)
    chunks = [*splitter.push(reply), *splitter.flush()]
    pcm = b"".join(part for chunk in chunks for part in svc.primary.synthesize(chunk, turn.voice))
    # 3. Then one complete WAV.
    return Response(wav_header(svc.primary.sample_rate, data_bytes=len(pcm)) + pcm, mimetype="audio/wav")
