"""The thinking filler: a reply slow to its first token gets the character's "Hmm, let me think." first,
in the server's voice, and the reply follows it without overlap; a prompt reply gets none.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from common.wav import read_wav_pcm16, resample_pcm16
from pi_client.call.machine import Outcome, State
from tests.fixtures_pi import PI_RATE
from tests.helpers import mock_pins
from tests.helpers import word_set as words
from tests.ollama_standin import OllamaStandIn
from tests.phone_rig import build_phone, phone_running, until
from tests.server_rig import ServerProcess
from tests.test_phone_dialing import Earpiece

WAIT = 120.0
HOOK_PIN = 17


def test_a_late_reply_gets_the_filler_first_and_a_prompt_one_does_not(
    call_server: ServerProcess, call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    sink = Earpiece(tmp_path / "r.wav")
    pi = {"filler": {"enabled": True, "after_seconds": 2.5}}  # Whisper here takes about 1 s of it

    async def scenario(pins: Any) -> Any:
        rig = build_phone(call_server, call_question_wav, call_whisper, tmp_path, sink, gated=True, pi=pi)
        phone, talk = rig.phone, rig.talk
        assert talk is not None
        async with phone_running(rig):
            pins.pin(HOOK_PIN).drive_low()
            await until(lambda: phone.state is State.LISTENING, "the greeting", WAIT)
            call_standin.script(3.5, "Paris is the capital of France, a lovely old city. ")  # slow to first token
            talk.put_nowait(None)
            await until(lambda: len(phone.turns) == 1 and phone.state is State.LISTENING, "the late reply", WAIT)
            late = len(sink.parts)
            call_standin.script("Rome is a fine city for food and old streets. ")
            talk.put_nowait(None)
            await until(lambda: len(phone.turns) == 2 and phone.state is State.LISTENING, "the prompt reply", WAIT)
            pins.pin(HOOK_PIN).drive_high()
            await until(lambda: phone.state is State.ON_HOOK, "the hang-up", 10)
            return phone, late

    with mock_pins() as pins:
        phone, late = asyncio.run(asyncio.wait_for(scenario(pins), WAIT))
    assert [t.outcome for t in phone.turns] == [Outcome.DONE, Outcome.DONE]
    cached = list((tmp_path / "cache" / "fillers").glob("operator-*.wav"))
    assert len(cached) == 1, cached  # kept on the phone per character and voice
    filler, filler_rate = read_wav_pcm16(str(cached[0]))
    assert {"let", "think"} <= words(call_whisper.transcribe(resample_pcm16(filler, filler_rate, PI_RATE)))
    # The late turn: the filler, whole and untouched, then the reply after it (one utterance, same rate).
    assert late == 2, [(rate, len(pcm)) for rate, pcm in sink.parts]  # greeting, filler + reply
    rate, pcm = sink.parts[1]
    assert rate == filler_rate and bytes(pcm[: len(filler)]) == filler  # nothing of the reply mixed into it
    reply = bytes(pcm[len(filler) :])
    assert {"paris", "capital"} <= words(call_whisper.transcribe(resample_pcm16(reply, rate, PI_RATE)))
    # The prompt turn: the reply at once, no filler.
    assert len(sink.parts) == 3 and not bytes(sink.parts[2][1]).startswith(filler[: len(filler) // 4])
    said = words(sink.transcript(call_whisper, 2))
    assert {"food", "streets"} <= said and not {"hmm", "think"} & said, said


def test_the_reply_queues_behind_the_filler_at_the_same_rate_and_follows_it_at_another(tmp_path: Path) -> None:
    from pi_client.call.filler import FillerSink

    filler, reply = b"\x01\x00" * 8000, b"\x02\x00" * 4000

    async def play(reply_rate: int) -> Earpiece:
        ear = Earpiece(tmp_path / f"{reply_rate}.wav")
        sink = FillerSink(ear)
        sink.play_filler(filler, 16000)
        await asyncio.sleep(0)  # the filler has begun
        await sink.start(reply_rate)  # the reply's first audio
        await sink.write(reply)
        await sink.finish()
        return ear

    same = asyncio.run(play(16000))
    assert [(rate, bytes(pcm)) for rate, pcm in same.parts] == [(16000, filler + reply)]  # one stream, in order
    other = asyncio.run(play(24000))
    assert [(rate, bytes(pcm)) for rate, pcm in other.parts] == [(16000, filler), (24000, reply)]
