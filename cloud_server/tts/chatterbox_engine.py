"""Chatterbox (``chatterbox-tts``) behind the TTS seam: one model per process, calls serialized.

The library's ``generate()`` has no length limit, no cancellation and writes into the model's
shared ``conds``. This engine adds, without copying library code:

- a speech-token budget per sentence, by capping the ``max_new_tokens`` (Turbo: ``max_gen_len``)
  that ``model.t3.inference`` receives;
- a deadline and the caller's cancel event, checked by forward pre-hooks on the modules run once
  per token (T3's speech embedding) and once per flow-matching step (S3Gen's estimator);
- a fresh clone of cached, pristine conditionals for every call, under one lock;
- streaming inside the sentence (``stream``): T3 on a worker thread, its tokens vocoded in windows
  while it still generates (chatterbox_stream.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import operator
import os
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from cloud_server.tts.base import TTSEngine, TTSError, VoiceSpec
from cloud_server.tts.chatterbox_batched import routed_here, speak_batched, t3_call
from cloud_server.tts.chatterbox_call import Interrupted, SentenceCall
from cloud_server.tts.chatterbox_plan import SAMPLES_PER_TOKEN, DevicePlan, plan_device, token_budget
from cloud_server.tts.chatterbox_stream import (
    TokensReady,
    TokenStream,
    in_t3_worker,
    speech_tokens,
    stream_audio,
    watermarked,
)
from cloud_server.tts.conditionals import ConditionalsCache, clone_conditionals
from cloud_server.tts.stream_stitch import StreamPlan
from cloud_server.tts.t3_batch import T3Batcher, in_batch_decoder
from cloud_server.tts.vocoder_gate import VocoderGate
from common.config import ChatterboxConfig, expand_path
from common.wav import float_to_pcm16

_LOGGER = logging.getLogger(__name__)

CHUNK_SAMPLES = 4800
"""PCM is handed out in 0.2 s pieces at 24 kHz."""
CFG_EPSILON = 1e-4
"""chatterbox-tts 0.1.7 breaks on cfg_weight=0.0 (tensor-size error); a tiny weight is the same as none."""
LOCK_POLL_SECONDS = 0.1
_BATCHER_START = threading.Lock()
MAX_GATHER_MS = 20.0
"""A caller never waits longer than this for others to start a batch with."""


@dataclass
class LoadedChatterbox:
    """A loaded model and what every engine using it shares: the lock, the hooks' call state."""

    model: Any
    kind: str
    plan: DevicePlan
    fingerprint: str
    """Identifies the weights, so conditionals from other weights are never reused."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    call: SentenceCall | None = None
    builtin: Any = None
    """Pristine copy of the checkpoint's built-in voice (conds.pt), if it has one."""
    vocoder_lock: VocoderGate = field(default_factory=VocoderGate)
    """Batched mode: S3Gen runs for one caller at a time, first windows first (the model ``lock`` is brief)."""
    batcher: T3Batcher | None = None
    batch_gather_seconds: float = 0.01
    batch_max_sequences: int = 8

    def batch_decoder(self) -> T3Batcher:
        """The model's one T3 batch decoder, started on first use."""
        with _BATCHER_START:
            if self.batcher is None:
                self.batcher = T3Batcher(
                    self.model.t3,
                    gather_seconds=self.batch_gather_seconds,
                    max_sequences=self.batch_max_sequences,
                    autocast=lambda: autocast(self.plan),
                )
            return self.batcher

    def check(self) -> None:
        """Stop generation when the caller hung up or the sentence ran out of time."""
        call = self.call
        if call is not None:
            call.check()

    def cap(self, requested: int | None) -> int:
        """The token limit for the current call."""
        budget = self.call.budget if self.call is not None else requested
        return min(x for x in (requested, budget) if x is not None)


def _fingerprint(cfg: ChatterboxConfig) -> str:
    if cfg.checkpoint is None:
        source = f"hub:{cfg.model}"
    else:
        root = expand_path(cfg.checkpoint).resolve()
        stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in root.iterdir() if p.is_file())
        source = f"{root}:{stats}"
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def load_chatterbox(cfg: ChatterboxConfig) -> LoadedChatterbox:
    """Load the configured model once (imports torch); raise on any failure, with the reason."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # the per-token progress bar would flood the log
    import torch

    plan = plan_device(
        cfg.device,
        cuda_available=torch.cuda.is_available(),
        bf16_supported=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        compile=cfg.compile,
        mixed_precision=cfg.mixed_precision,
        compile_mode=cfg.compile_mode,
    )
    for note in plan.notes:
        _LOGGER.info("%s", note)
    if cfg.model == "turbo":
        from chatterbox.tts_turbo import ChatterboxTurboTTS as model_cls
    else:
        from chatterbox.tts import ChatterboxTTS as model_cls
    started = time.monotonic()
    if cfg.checkpoint is not None:
        model = model_cls.from_local(str(expand_path(cfg.checkpoint)), plan.device)
    else:
        model = model_cls.from_pretrained(plan.device)
    loaded = LoadedChatterbox(model=model, kind=cfg.model, plan=plan, fingerprint=_fingerprint(cfg))
    if model.conds is not None:
        loaded.builtin = clone_conditionals(model.conds)
    _install_bounds(loaded)
    compile_modules(model, plan)
    _LOGGER.info(
        "Loaded Chatterbox %s on %s in %.1f s (autocast %s, compile %s)",
        cfg.model, plan.device, time.monotonic() - started, plan.autocast_dtype,
        plan.compile_mode if plan.compile else False,
    )
    return loaded


def compile_modules(model: Any, plan: DevicePlan) -> None:
    """Put torch.compile'd versions of the plan's modules in place (compiled lazily, on first use).

    Forward pre-hooks stay on the original modules and run outside the compiled graph.
    """
    if not plan.compiled_modules:
        return
    import torch

    for path in plan.compiled_modules:
        owner_path, _, name = path.rpartition(".")
        owner = operator.attrgetter(owner_path)(model)
        setattr(owner, name, torch.compile(getattr(owner, name), mode=plan.compile_mode, dynamic=True))


def _install_bounds(loaded: LoadedChatterbox) -> None:
    """Cap the token count the library asks for and let hooks interrupt its loops."""
    t3 = loaded.model.t3
    if loaded.kind == "turbo":
        inner_turbo = t3.inference_turbo

        def bounded_turbo(*args: Any, max_gen_len: int = 1000, **kwargs: Any) -> Any:
            if routed_here():  # batched: the caller's budget is applied by its route
                return t3_call(inner_turbo, args, {**kwargs, "max_gen_len": max_gen_len})
            # inference_turbo samples one token before its loop of max_gen_len more.
            return inner_turbo(*args, max_gen_len=max(loaded.cap(max_gen_len) - 1, 0), **kwargs)

        t3.inference_turbo = bounded_turbo
    else:
        inner = t3.inference

        def bounded(*args: Any, max_new_tokens: int | None = None, **kwargs: Any) -> Any:
            if routed_here():  # batched: the caller's budget is applied by its route
                return t3_call(inner, args, {**kwargs, "max_new_tokens": max_new_tokens})
            return inner(*args, max_new_tokens=loaded.cap(max_new_tokens), **kwargs)

        t3.inference = bounded

    def hook(_module: Any, _args: Any) -> None:
        loaded.check()

    def token_hook(_module: Any, args: Any) -> None:
        # Each new token is embedded to be fed back: the one place T3 shows it while generating.
        if in_batch_decoder():  # batched: the decoder hands out tokens and checks each caller itself
            return
        call = loaded.call
        ids = args[0] if args else None
        if call is not None and call.tokens is not None and ids is not None and ids.shape[-1] == 1 and in_t3_worker():
            call.tokens.push(int(ids.reshape(-1)[0]))
        loaded.check()

    t3.speech_emb.register_forward_pre_hook(token_hook)
    loaded.model.s3gen.flow.decoder.estimator.register_forward_pre_hook(hook)
    s3gen = loaded.model.s3gen
    inner_vocode = s3gen.inference

    def vocode(*args: Any, **kwargs: Any) -> Any:
        if in_t3_worker():  # a streamed sentence's generate() got past T3: the caller vocodes, not us
            raise TokensReady(speech_tokens(kwargs["speech_tokens"] if "speech_tokens" in kwargs else args[0]))
        return inner_vocode(*args, **kwargs)

    s3gen.inference = vocode


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
        if not 0.0 <= cfg.batch_gather_ms <= MAX_GATHER_MS or cfg.batch_max_sequences < 1:
            raise ValueError(f"tts.chatterbox: need batch_gather_ms in 0-{MAX_GATHER_MS:g}, batch_max_sequences >= 1")
        if self.loaded.batcher is None:  # the first engine on a model sets up its decoder
            self.loaded.batch_gather_seconds = cfg.batch_gather_ms / 1000.0
            self.loaded.batch_max_sequences = cfg.batch_max_sequences

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
        """Drop the model (the memory goes when the last engine using it is gone) and its batch decoder."""
        batcher, self.loaded.batcher = self.loaded.batcher, None
        if batcher is not None:
            batcher.close()
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

        options = {"n_cfm_timesteps": 2} if self.loaded.kind == "turbo" else {}  # as generate() does
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


def autocast(plan: DevicePlan) -> Any:
    """The autocast context generation runs in (none in float32)."""
    if plan.autocast_dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type="cuda", dtype=getattr(torch, plan.autocast_dtype))


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

