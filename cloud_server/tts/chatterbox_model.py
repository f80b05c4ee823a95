"""A loaded Chatterbox model and the hooks every engine on it shares (loading, bounds, batch decoder).

The library's ``generate()`` has no length limit, no cancellation and no batching. Installed once at
load, without copying library code: a cap on the ``max_new_tokens`` (Turbo: ``max_gen_len``) that
``model.t3.inference`` receives, or the hand-over of that call to a batched caller's route; forward
pre-hook on T3's speech embedding (once per token) and a wrapper on S3Gen's estimator (once per flow
step, s3gen_hooks.py) that check the sentence in flight; S3Gen's hand-over of T3's final tokens to a
streamed sentence; and the routing of a caller's S3Gen window to the S3Gen batch (vocoder_batch.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import operator
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cloud_server.tts.chatterbox_batched import routed_here, t3_call
from cloud_server.tts.chatterbox_call import SentenceCall
from cloud_server.tts.chatterbox_plan import DevicePlan, plan_device
from cloud_server.tts.chatterbox_stream import TokensReady, in_t3_worker, speech_tokens
from cloud_server.tts.conditionals import clone_conditionals
from cloud_server.tts.s3gen_hooks import (
    batch_decode,
    install_window_routing,
    prepare_for_concurrent_windows,
    watch_flow_steps,
)
from cloud_server.tts.t3_batch import T3Batcher, in_batch_decoder
from cloud_server.tts.vocoder_batch import VocoderBatcher, check_batch_members
from cloud_server.tts.vocoder_gate import VocoderGate
from common.config import ChatterboxConfig, expand_path

_LOGGER = logging.getLogger(__name__)
_BATCHER_START = threading.Lock()

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
    """Batched mode, ``vocoder_batch`` off: S3Gen for one caller at a time, first windows first."""
    batcher: T3Batcher | None = None
    vocoder_batcher: VocoderBatcher | None = None
    """Batched mode with ``vocoder_batch`` on: S3Gen's flow decoder for several callers' windows at once."""
    batch_gather_seconds: float = 0.01
    batch_max_sequences: int = 8
    batch_prefill_chunk: int = 0
    batch_first_audio_first: bool = False

    def batch_decoder(self) -> T3Batcher:
        """The model's one T3 batch decoder, started on first use."""
        with _BATCHER_START:
            if self.batcher is None:
                self.batcher = T3Batcher(
                    self.model.t3,
                    gather_seconds=self.batch_gather_seconds,
                    max_sequences=self.batch_max_sequences,
                    prefill_chunk=self.batch_prefill_chunk,
                    first_audio_first=self.batch_first_audio_first,
                    autocast=lambda: autocast(self.plan),
                )
            return self.batcher

    def vocoder_batch(self) -> VocoderBatcher:
        """The model's one S3Gen batch, started on first use."""
        with _BATCHER_START:
            if self.vocoder_batcher is None:
                s3gen = self.model.s3gen
                prepare_for_concurrent_windows(s3gen)
                self.vocoder_batcher = VocoderBatcher(
                    batch_decode(s3gen),
                    gather_seconds=self.batch_gather_seconds,
                    max_windows=self.batch_max_sequences,
                    autocast=lambda: autocast(self.plan),
                )
            return self.vocoder_batcher

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
    _install_s3gen_hooks(loaded)  # after compiling: on the estimator the solver really calls
    _LOGGER.info(
        "Loaded Chatterbox %s on %s in %.1f s (autocast %s, compile %s)",
        cfg.model, plan.device, time.monotonic() - started, plan.autocast_dtype,
        plan.compile_mode if plan.compile else False,
    )
    return loaded


def compile_modules(model: Any, plan: DevicePlan) -> None:
    """Put torch.compile'd versions of the plan's modules in place (compiled lazily, on first use).

    The flow-step check is put on the compiled estimator afterwards, outside its graph (s3gen_hooks.py).
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
    s3gen = loaded.model.s3gen
    inner_vocode = s3gen.inference

    def vocode(*args: Any, **kwargs: Any) -> Any:
        if in_t3_worker():  # a streamed sentence's generate() got past T3: the caller vocodes, not us
            raise TokensReady(speech_tokens(kwargs["speech_tokens"] if "speech_tokens" in kwargs else args[0]))
        return inner_vocode(*args, **kwargs)

    s3gen.inference = vocode


def _install_s3gen_hooks(loaded: LoadedChatterbox) -> None:
    """Check the window in flight at every flow step; let a caller's window join the S3Gen batch."""

    def on_step() -> None:
        if not check_batch_members():  # the batch thread checks each of its windows' callers itself
            loaded.check()

    watch_flow_steps(loaded.model.s3gen, on_step)
    install_window_routing(loaded.model.s3gen)


def autocast(plan: DevicePlan) -> Any:
    """The autocast context generation runs in (none in float32)."""
    if plan.autocast_dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type="cuda", dtype=getattr(torch, plan.autocast_dtype))
