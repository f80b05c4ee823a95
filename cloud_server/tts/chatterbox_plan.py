"""Pure decisions for the Chatterbox engine: device, dtype and compile; each sentence's token budget."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

SAMPLES_PER_TOKEN = 960
"""Chatterbox speaks 25 speech tokens per second at 24 kHz."""

CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
"""torch.compile's modes: reduce-overhead adds CUDA graphs, max-autotune also tunes its kernels."""

COMPILED_MODULES = ("t3.tfmr", "s3gen.flow.encoder", "s3gen.flow.decoder.estimator")
"""What ``compile`` compiles, as attribute paths on the model: T3's transformer (once per speech
token) and S3Gen's token encoder and flow-matching estimator (once per step), where the time goes."""


@dataclass(frozen=True)
class DevicePlan:
    """Where and how the model runs."""

    device: Literal["cuda", "cpu"]
    compile: bool
    """torch.compile T3 and S3Gen (``compiled_modules``)."""
    autocast_dtype: Literal["bfloat16", "float16"] | None
    """Autocast dtype for generation; None runs in float32."""
    notes: tuple[str, ...] = ()
    """Requested settings that were ignored, and why (logged at load)."""
    compile_mode: CompileMode = "default"
    """The mode torch.compile is asked for."""

    @property
    def compiled_modules(self) -> tuple[str, ...]:
        """The model's modules to compile: none unless ``compile``."""
        return COMPILED_MODULES if self.compile else ()


def plan_device(
    requested: Literal["auto", "cuda", "cpu"],
    *,
    cuda_available: bool,
    bf16_supported: bool,
    compile: bool,
    mixed_precision: bool,
    compile_mode: CompileMode = "default",
) -> DevicePlan:
    """Resolve ``auto`` and drop the CUDA-only switches on CPU; CUDA asked for but absent is an error."""
    if requested == "cuda" and not cuda_available:
        raise ValueError("tts.chatterbox.device is 'cuda' but torch sees no CUDA device")
    if requested == "cpu" or not cuda_available:
        notes = []
        if compile:
            notes.append("tts.chatterbox.compile ignored: torch.compile is only used on CUDA")
        if mixed_precision:
            notes.append("tts.chatterbox.mixed_precision ignored: autocast is only used on CUDA")
        return DevicePlan("cpu", compile=False, autocast_dtype=None, notes=tuple(notes))
    dtype: Literal["bfloat16", "float16"] | None = None
    if mixed_precision:
        dtype = "bfloat16" if bf16_supported else "float16"
    return DevicePlan("cuda", compile=compile, autocast_dtype=dtype, compile_mode=compile_mode)


def vocoder_batching(setting: Literal["auto", True, False], device: str) -> bool:
    """Whether S3Gen vocodes concurrent callers' windows in one batch: ``auto`` on CUDA only.

    On a CPU S3Gen is compute-bound, so four callers' windows in one batch cost as much as four
    one after the other (docs/PERFORMANCE.md); on a GPU one step for several windows costs little more.
    """
    return device == "cuda" if setting == "auto" else bool(setting)


def token_budget(text_chars: int, tokens_per_char: float, min_tokens: int, max_tokens: int) -> int:
    """Speech tokens one sentence may use: proportional to its length, within [min_tokens, max_tokens]."""
    wanted = math.ceil(max(text_chars, 0) * tokens_per_char)
    return max(1, min(max_tokens, max(min_tokens, wanted)))
