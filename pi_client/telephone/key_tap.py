"""Touch-tone keys pressed during a call, heard in the same microphone audio the call listens to.

While the phone listens to the caller, the microphone belongs to the call (VAD, Smart Turn,
Whisper), so no second reader may open it. :class:`TouchToneTap` wraps the call's audio source:
every frame goes through a :class:`~pi_client.telephone.dtmf.DtmfDecoder`, whose keys are handed to
``on_key`` (the phone's keypad: a digit switches character, ``*`` ends the call), and on to the call
unchanged, except while a key's tone sounds: then the call hears silence, so a key is never taken for
speech (a turn, or a barge-in over the reply). The decoder rejects speech, so talking never dials.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from pi_client.audio.capture import AudioSource
from pi_client.telephone.dtmf import DtmfDecoder


class TouchToneTap(AudioSource):
    """``source`` with the touch-tone keys heard in it passed to ``on_key`` and their tones silenced."""

    def __init__(self, source: AudioSource, on_key: Callable[[str], None]) -> None:
        self._source = source
        self._on_key = on_key
        self._decoder = DtmfDecoder()
        self.block_samples = source.block_samples

    async def frames(self) -> AsyncIterator[bytes]:
        """The source's frames; a key is handed over as soon as its tone is long enough (40 ms)."""
        async for frame in self._source.frames():
            for key in self._decoder.feed(frame):  # a few matrix products per frame: no thread needed
                self._on_key(key)
            yield bytes(len(frame)) if self._decoder.tone_sounding else frame

    def close(self) -> None:
        self._source.close()
