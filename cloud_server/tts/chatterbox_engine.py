"""Chatterbox (``chatterbox-tts``) behind the TTS seam: one model per process, voices with cached conditionals.

Every sentence gets a fresh clone of its voice's pristine conditionals and a token budget, deadline
and cancel event (chatterbox_call.py), enforced by the hooks installed at load (chatterbox_model.py).
Two ways to share the model: ``batch`` on, concurrent callers' sentences decode together in one T3
batch (chatterbox_batched.py); off, one sentence at a time under the model lock. Either way a
sentence can be streamed inside itself (``stream``: its tokens vocoded in windows while T3 still
generates, chatterbox_stream.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

from cloud_server.tts.base import TTSEngine, TTSError, VoiceSpec
from cloud_server.tts.chatterbox_batched import speak_batched
from cloud_server.tts.chatterbox_call import Interrupted, SentenceCall
from cloud_server.tts.chatterbox_model import LoadedChatterbox, autocast, compile_modules, load_chatterbox
from cloud_server.tts.chatterbox_plan import SAMPLES_PER_TOKEN, token_budget, vocoder_batching
from cloud_server.tts.chatterbox_stream import TokenStream, stream_audio, watermarked
from cloud_server.tts.conditionals import ConditionalsCache, clone_conditionals
from cloud_server.tts.stream_stitch import StreamPlan
from common.config import ChatterboxConfig, expand_path
from common.wav import float_to_pcm16

__all__ = ["ChatterboxEngine", "LoadedChatterbox", "compile_modules", "load_chatterbox"]

_LOGGER = logging.getLogger(__name__)

CHUNK_SAMPLES = 4800
"""PCM is handed out in 0.2 s pieces at 24 kHz."""
CFG_EPSILON = 1e-4
"""chatterbox-tts 0.1.7 breaks on cfg_weight=0.0 (tensor-size error); a tiny weight is the same as none."""
LOCK_POLL_SECONDS = 0.1
MAX_GATHER_MS = 20.0
"""A caller never waits longer than this for others to start a batch with."""
MIN_VOCODE_TOKENS = 2
"""S3Gen fades in the first 40 ms of every render and fails on a shorter one (one token gives 20 ms):
a sentence of fewer valid tokens is padded with S3Gen's silence token, as Turbo pads every sentence."""


class ChatterboxEngine(TTSEngine):
    """Chatterbox voices with cached conditionals; one sentence at a time per loaded model."""

    def __init__(self, cfg: ChatterboxConfig, loaded: LoadedChatterbox | None = None) -> None:
        self.cfg = cfg
        self.loaded = loaded if loaded is not None else load_chatterbox(cfg)
        self.name = "chatterbox"  # the model kind is in self.loaded.kind
        self.sample_rate = int(self.loaded.model.sr)
        self.device = self.loaded.plan.device
        conds_cls = _conditionals_class(self.loaded.kind)
        namespace = f"{self.loaded.kind}-{self.loaded.fingerprint}"
        self._cache = ConditionalsCache(expand_path(cfg.conditionals_dir), namespace, conds_cls, self.device)
        self._plan = StreamPlan(  # checked now: a bad setting stops the server at start, not every sentence
            first_chunk_tokens=cfg.stream_first_chunk_tokens,
            chunk_tokens=cfg.stream_chunk_tokens,
            context_tokens=cfg.stream_context_tokens,
            holdback_tokens=cfg.stream_holdback_tokens,
            samples_per_token=SAMPLES_PER_TOKEN,
        )
        if not 0.0 <= cfg.batch_gather_ms <= MAX_GATHER_MS or cfg.batch_max_sequences < 1 or cfg.prefill_chunk < 0:
            raise ValueError(
                f"tts.chatterbox: need batch_gather_ms in 0-{MAX_GATHER_MS:g}, batch_max_sequences >= 1, "
                "prefill_chunk >= 0"
            )
        self.vocoder_batched = cfg.batch and vocoder_batching(cfg.vocoder_batch, self.device)
        """S3Gen vocodes concurrent callers' windows together (vocoder_batch.py), not one caller at a time."""
        if self.loaded.batcher is None:  # the first engine on a model sets up its decoder
            self.loaded.batch_gather_seconds = cfg.batch_gather_ms / 1000.0
            self.loaded.batch_max_sequences = cfg.batch_max_sequences
            self.loaded.batch_prefill_chunk = cfg.prefill_chunk
            # T3 and S3Gen share the cores only on a CPU; on a GPU the token loop runs beside S3Gen for free.
            self.loaded.batch_first_audio_first = cfg.first_audio_first and self.loaded.plan.device == "cpu"

    # ------------------------------------------------------------------ the seam

    def prepare_voice(self, voice: VoiceSpec) -> None:
        """Compute (or load) the voice's conditionals now, so its first sentence does not wait for it."""
        with self.loaded.lock:
            self._pristine(voice)

    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        """Speak one sentence as PCM16 at 24 kHz; nothing when cancelled; TTSError on failure or timeout.

        Streamed (``stream``), pieces come while T3 still generates; a failure after some audio is
        still a TTSError, so the caller's fallback voice speaks on.
        """
        text = text.strip()
        if not text:
            return
        budget = token_budget(len(text), self.cfg.max_tokens_per_char, self.cfg.min_tokens, self.cfg.max_tokens)
        if voice.max_tokens is not None:  # the request's own cap, below the length-based budget
            budget = max(1, min(budget, voice.max_tokens))
        started = time.monotonic()
        if self.cfg.batch:
            call = SentenceCall(budget, started + self.cfg.sentence_timeout_seconds, cancel)
            source = speak_batched(self, text, voice, call)
        else:
            source = self._serialized(text, voice, cancel, budget)
        try:
            with contextlib.closing(source) as pieces:
                for piece in pieces:
                    yield from _pcm_chunks(piece)
        except Interrupted as stop:
            if stop.cancelled:
                _LOGGER.info("Synthesis cancelled after %.1f s", time.monotonic() - started)
                return
            raise TTSError(f"sentence took longer than {self.cfg.sentence_timeout_seconds:g} s") from None
        except TTSError:
            raise
        except Exception as err:
            _LOGGER.exception("Chatterbox failed on a %d-char sentence", len(text))
            raise TTSError(f"chatterbox failed: {err}") from err
        _LOGGER.info(
            "Synthesized %d chars (budget %d tokens, %s%s) in %.1f s", len(text), budget,
            "streamed" if self.cfg.stream else "whole", ", batched" if self.cfg.batch else "",
            time.monotonic() - started,
        )

    def close(self) -> None:
        """Drop the model (the memory goes when the last engine using it is gone) and its batch decoders."""
        batcher, self.loaded.batcher = self.loaded.batcher, None
        if batcher is not None:
            batcher.close()
        vocoder, self.loaded.vocoder_batcher = self.loaded.vocoder_batcher, None
        if vocoder is not None:
            vocoder.close()
        self.loaded.model = None

    # ------------------------------------------------------------------ internals

    def _serialized(
        self, text: str, voice: VoiceSpec, cancel: threading.Event | None, budget: int
    ) -> Generator[Any, None, None]:
        """One sentence with the model to itself (the lock held throughout): float audio pieces."""
        if not self._acquire(cancel):
            return
        wav = None
        try:
            conds = clone_conditionals(self._pristine(voice))
            self.loaded.call = SentenceCall(budget, time.monotonic() + self.cfg.sentence_timeout_seconds, cancel)
            if self.cfg.stream:
                with contextlib.closing(self._stream(text, voice, conds)) as pieces:
                    yield from pieces
            else:
                wav = self._generate(text, voice, conds)
        finally:
            self.loaded.call = None
            if self.loaded.model is not None:
                self.loaded.model.conds = None  # the next call brings its own copy
            self.loaded.lock.release()
        if wav is not None:  # handed out after the lock is let go
            yield wav

    def vocode(self, conds: Any, window: list[int]) -> Any:
        """S3Gen on speech tokens with the voice's reference, as generate() calls it: float audio."""
        import torch
        from chatterbox.models.s3gen.const import S3GEN_SIL

        options = {"n_cfm_timesteps": 2} if self.loaded.kind == "turbo" else {}  # as generate() does
        window = [*window, *[S3GEN_SIL] * (MIN_VOCODE_TOKENS - len(window))]
        ids = torch.tensor(window, dtype=torch.long, device=self.device)
        with self._autocast():
            wav, _ = self.loaded.model.s3gen.inference(speech_tokens=ids, ref_dict=conds.gen, **options)
        return wav.reshape(-1).detach().float().cpu().numpy()

    def _acquire(self, cancel: threading.Event | None) -> bool:
        """Wait for the model, leaving the queue if the caller hangs up."""
        while not self.loaded.lock.acquire(timeout=LOCK_POLL_SECONDS):
            if cancel is not None and cancel.is_set():
                return False
        return True

    def _exaggeration(self, voice: VoiceSpec) -> float:
        return 0.0 if self.loaded.kind == "turbo" else float(voice.exaggeration)  # Turbo ignores it

    def _pristine(self, voice: VoiceSpec) -> Any:
        """The cached conditionals for ``voice`` (caller holds the lock)."""
        clip = voice.clip or self.cfg.voice_clip
        exaggeration = self._exaggeration(voice)
        if clip is None:
            return self._builtin(exaggeration)
        path = expand_path(clip)
        if not path.is_file():
            raise TTSError(f"voice {voice.voice_id}: clip {path} does not exist")
        try:
            return self._cache.get(str(path), exaggeration, self._compute)
        except Exception as err:
            _LOGGER.exception("Could not prepare voice %s from %s", voice.voice_id, path)
            raise TTSError(f"voice {voice.voice_id}: cannot use clip {path.name}: {err}") from err

    def _compute(self, clip: str, exaggeration: float) -> Any:
        model = self.loaded.model
        model.prepare_conditionals(clip, exaggeration=exaggeration)
        conds, model.conds = model.conds, None
        return conds

    def _builtin(self, exaggeration: float) -> Any:
        key = f"builtin-ex{exaggeration:.3f}"
        cached = self._cache.recall(key)
        if cached is not None:
            return cached
        if self.loaded.builtin is None:
            raise TTSError("no voice clip configured and the checkpoint has no built-in voice (conds.pt)")
        import torch

        conds = clone_conditionals(self.loaded.builtin)
        conds.t3.emotion_adv = exaggeration * torch.ones(1, 1, 1, device=self.device)
        return self._cache.remember(key, conds)

    def _autocast(self) -> Any:
        return autocast(self.loaded.plan)

    def _generate(self, text: str, voice: VoiceSpec, conds: Any) -> Any:
        model = self.loaded.model
        model.conds = conds
        with self._autocast():
            if self.loaded.kind == "turbo":
                out = model.generate(text, temperature=voice.temperature)
            else:
                out = model.generate(
                    text,
                    exaggeration=float(voice.exaggeration),
                    cfg_weight=max(float(voice.cfg_weight), CFG_EPSILON),
                    temperature=voice.temperature,
                )
        return out.detach().float().cpu().numpy().reshape(-1)

    def _stream(self, text: str, voice: VoiceSpec, conds: Any) -> Generator[Any, None, None]:
        """Float audio pieces of one sentence, watermarked, while T3 still generates (lock held)."""
        call, model = self.loaded.call, self.loaded.model
        assert call is not None
        call.tokens = TokenStream()
        pieces = stream_audio(
            lambda: self._generate(text, voice, conds),
            lambda window: self.vocode(conds, window),
            call.tokens,
            self._plan,
            call.stop,
            self.loaded.check,
            max(call.deadline - time.monotonic(), 0.0) + 1.0,
            f"{threading.current_thread().name}:t3",
        )
        with contextlib.closing(pieces):
            for piece in pieces:
                # generate() watermarks every sentence; a streamed one is watermarked piece by piece.
                yield watermarked(model.watermarker, piece, self.sample_rate)


def _pcm_chunks(wav: Any) -> Iterator[bytes]:
    pcm = float_to_pcm16(wav)
    step = CHUNK_SAMPLES * 2
    for pos in range(0, len(pcm), step):
        yield pcm[pos : pos + step]


def _conditionals_class(kind: str) -> Any:
    if kind == "turbo":
        from chatterbox.tts_turbo import Conditionals
    else:
        from chatterbox.tts import Conditionals
    return Conditionals

