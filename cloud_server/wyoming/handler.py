"""One Home Assistant connection: describe, synthesize (whole or streamed text), transcribe.

Audio goes out as it arrives from the server: ``audio-start``, an ``audio-chunk`` per piece of the
HTTP body, ``audio-stop``. Streamed text (``synthesize-start/chunk/stop``) is cut into sentences and
each is spoken as soon as it is complete; the plain ``synthesize`` that Home Assistant sends
alongside a stream is ignored, as wyoming-piper does.
"""

from __future__ import annotations

import io
import logging
import wave
from typing import Final

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from cloud_server.pipeline.sentences import SentenceSplitter
from cloud_server.wyoming.voice_server import SPEECH_RATE, ServerError, Voice, VoiceServer
from common.config import SentenceConfig

_LOGGER = logging.getLogger(__name__)
ATTRIBUTION: Final = Attribution(name="AI Telephone", url="https://github.com/")
MAX_RECORDING_BYTES: Final = 10_000_000
"""Audio kept for one transcription (about 5 min at 16 kHz); more is dropped."""
LANGUAGES: Final = ["en"]


class BridgeHandler(AsyncEventHandler):
    """Translates one Wyoming client's events into calls on the voice server."""

    def __init__(self, server: VoiceServer, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._server = server
        self._splitter: SentenceSplitter | None = None
        self._stream_voice: str | None = None
        self._audio_started = False
        self._recording: bytearray | None = None
        self._format: tuple[int, int, int] = (16000, 2, 1)

    async def handle_event(self, event: Event) -> bool:
        try:
            if Describe.is_type(event.type):
                await self.write_event((await self._info()).event())
            elif SynthesizeStart.is_type(event.type):
                start = SynthesizeStart.from_event(event)
                self._splitter = SentenceSplitter(SentenceConfig())
                self._stream_voice = await self._voice_name(start.voice.name if start.voice else None)
                self._audio_started = False
            elif SynthesizeChunk.is_type(event.type) and self._splitter is not None:
                for sentence in self._splitter.push(SynthesizeChunk.from_event(event).text):
                    await self._speak(sentence, str(self._stream_voice))
            elif SynthesizeStop.is_type(event.type) and self._splitter is not None:
                for sentence in self._splitter.flush():
                    await self._speak(sentence, str(self._stream_voice))
                self._splitter = None
                await self._end_audio()
                await self.write_event(SynthesizeStopped().event())
            elif Synthesize.is_type(event.type) and self._splitter is None:
                synthesize = Synthesize.from_event(event)
                voice = await self._voice_name(synthesize.voice.name if synthesize.voice else None)
                self._audio_started = False
                await self._speak(synthesize.text, voice)
                await self._end_audio()
            elif Transcribe.is_type(event.type):
                self._recording = bytearray()
            elif AudioStart.is_type(event.type):
                start_audio = AudioStart.from_event(event)
                self._format = (start_audio.rate, start_audio.width, start_audio.channels)
                self._recording = bytearray()
            elif AudioChunk.is_type(event.type) and self._recording is not None:
                chunk = AudioChunk.from_event(event)
                self._format = (chunk.rate, chunk.width, chunk.channels)
                if len(self._recording) + len(chunk.audio) <= MAX_RECORDING_BYTES:
                    self._recording += chunk.audio
            elif AudioStop.is_type(event.type) and self._recording is not None:
                wav, self._recording = _wav(bytes(self._recording), *self._format), None
                text = await self._server.transcribe(wav)
                _LOGGER.info("Heard: %s", text)
                await self.write_event(Transcript(text=text).event())
        except ServerError as err:
            _LOGGER.warning("%s", err)
            self._splitter = None
            await self.write_event(Error(text=str(err), code="server-error").event())
        return True

    async def _info(self) -> Info:
        try:
            voices = await self._server.voices()
        except ServerError as err:
            _LOGGER.warning("No voices from the server: %s", err)
            voices = []
        return Info(
            tts=[TtsProgram(
                name="ai-telephone", attribution=ATTRIBUTION, installed=True, version=None,
                description="AI Telephone characters and cloned voices",
                voices=[_tts_voice(v) for v in voices],
                supports_synthesize_streaming=True,
            )],
            asr=[AsrProgram(
                name="ai-telephone-whisper", attribution=ATTRIBUTION, installed=True, version=None,
                description="The voice server's Whisper",
                models=[AsrModel(name="whisper", attribution=ATTRIBUTION, installed=True, version=None,
                                 description="faster-whisper on the voice server", languages=LANGUAGES)],
            )],
        )

    async def _voice_name(self, requested: str | None) -> str:
        return requested or await self._server.default_character()

    async def _speak(self, text: str, voice: str) -> None:
        """Stream one piece of text's audio to the client as the server sends it."""
        pending = b""
        async for data in self._server.speech(text, voice):  # a refusal raises before any audio-start
            if not self._audio_started:
                await self.write_event(AudioStart(rate=SPEECH_RATE, width=2, channels=1).event())
                self._audio_started = True
            pending += data
            whole = len(pending) - len(pending) % 2  # a chunk holds whole samples
            if whole:
                await self.write_event(AudioChunk(rate=SPEECH_RATE, width=2, channels=1, audio=pending[:whole]).event())
                pending = pending[whole:]

    async def _end_audio(self) -> None:
        if not self._audio_started:
            await self.write_event(AudioStart(rate=SPEECH_RATE, width=2, channels=1).event())
        await self.write_event(AudioStop().event())
        self._audio_started = False


def _tts_voice(voice: Voice) -> TtsVoice:
    return TtsVoice(
        name=voice.voice_id, attribution=ATTRIBUTION, installed=True, version=None,
        description=f"{voice.name} ({voice.kind})", languages=LANGUAGES,
    )


def _wav(pcm: bytes, rate: int, width: int, channels: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buf.getvalue()
