"""S3Gen's hooks on the loaded model's own instances, without changing chatterbox-tts.

chatterbox-tts 0.1.7's flow solver calls ``estimator.forward(...)`` directly, which bypasses module
hooks. An instance attribute ``forward`` shadows the class's method, so ``watch_flow_steps`` puts a
wrapper there that runs before every flow step. It is installed after torch.compile, on whatever
module the solver calls (a compiled module's ``forward`` is an instance attribute too), so the check
stays outside the compiled graph.

Two more wrappers route one thread's window to the S3Gen batch (vocoder_batch.py): the flow
decoder's call, after the library has run the caller's own flow encoder, goes to the batch thread;
HiFiGAN stays on the caller's thread, and when the window has a seed it draws from the window's own
random stream. With the same seed a window's audio is then what the library gives alone after
``torch.manual_seed(seed)``: the same noise in the same order (Turbo's mel noise, the flow's starting
noise, then HiFiGAN's).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from cloud_server.tts.thread_route import ThreadRoute
from cloud_server.tts.vocoder_batch import FlowJob, VocoderBatcher

_GLOBAL_RNG = threading.Lock()
"""HiFiGAN draws from torch's global generator: a seeded window borrows it, one window at a time."""
LONGEST_ENCODER_INPUT = 4096
"""Positions the flow encoder's relative position tables are built for up front: a voice prompt
(≤ 10 s, 250 tokens) plus the longest window (≤ 1000 tokens), doubled by its upsampling."""


@dataclass
class WindowRoute:
    """Where this thread's S3Gen window goes: the batch, with its caller's check and random stream."""

    batcher: VocoderBatcher
    first: bool
    check: Callable[[], None]
    generator: torch.Generator | None = None
    """None: the global generator, as the library draws; else this window's own stream."""


_ROUTE: ThreadRoute[WindowRoute] = ThreadRoute()


def routed_window(route: WindowRoute) -> contextlib.AbstractContextManager[None]:
    """While inside, this thread's S3Gen call solves its flow in the batch."""
    return _ROUTE.using(route)


def window_generator(seed: int | None, device: str) -> torch.Generator | None:
    """A window's own random stream (None without a seed)."""
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


def watch_flow_steps(s3gen: Any, on_step: Callable[[], None]) -> None:
    """Call ``on_step`` before each of the flow estimator's passes (it may raise to stop the window)."""
    estimator = s3gen.flow.decoder.estimator
    inner = estimator.forward

    def stepped(*args: Any, **kwargs: Any) -> Any:
        on_step()
        return inner(*args, **kwargs)

    estimator.forward = stepped


def install_window_routing(s3gen: Any) -> None:
    """Hand a routed thread's flow-decoder call to its batch, and seed its HiFiGAN call."""
    decoder = s3gen.flow.decoder
    inner_decode = decoder.forward
    signature = inspect.signature(inner_decode)

    def decode(*args: Any, **kwargs: Any) -> Any:
        route = _ROUTE.get()
        if route is None:
            return inner_decode(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        given = bound.arguments
        job = FlowJob(
            mu=given["mu"], mask=given["mask"], spks=given["spks"], cond=given["cond"],
            noise=_noise(given["mu"], given["noised_mels"], route.generator),
            n_timesteps=int(given["n_timesteps"]), meanflow=bool(given["meanflow"]),
            first=route.first, check=route.check,
        )
        return route.batcher.submit(job).wait(poll=route.check), None

    decoder.forward = decode
    inner_hift = s3gen.hift_inference

    def hift(*args: Any, **kwargs: Any) -> Any:
        route = _ROUTE.get()
        if route is None or route.generator is None:
            return inner_hift(*args, **kwargs)
        with _global_rng_from(route.generator):
            return inner_hift(*args, **kwargs)

    s3gen.hift_inference = hift


def batch_decode(s3gen: Any) -> Callable[..., Any]:
    """The flow decoder as the batch thread calls it (the wrappers pass an unrouted call through)."""

    def decode(**kwargs: Any) -> Any:
        # The library draws starting noise it will not use (ours comes in): not while a seeded window borrows
        # the global generator.
        with _GLOBAL_RNG:
            return s3gen.flow.decoder(**kwargs)

    return decode


def prepare_for_concurrent_windows(s3gen: Any) -> None:
    """Build the flow encoder's position tables once, long enough for any window.

    The library grows them on the first input longer than any before, by replacing the table; two
    callers' encoders running at once could then read a table too short for one of them.
    """
    for module in s3gen.flow.encoder.modules():
        if hasattr(module, "extend_pe"):
            module.extend_pe(torch.zeros(1, LONGEST_ENCODER_INPUT, 1, device=s3gen.device, dtype=s3gen.dtype))


def _noise(mu: torch.Tensor, noised_mels: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    """The flow's starting noise as the library makes it: Turbo's mel noise drawn first, then the rest."""
    if generator is None:
        noise = torch.randn_like(mu)
        mel_noise = noised_mels
    else:
        mel_noise = None
        if noised_mels is not None:  # Turbo drew it from the global generator: draw it again from ours
            mel_noise = torch.randn(noised_mels.shape, generator=generator, device=mu.device,
                                    dtype=noised_mels.dtype)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    if mel_noise is not None:
        noise[..., mu.shape[-1] - mel_noise.shape[-1] :] = mel_noise
    return noise


@contextlib.contextmanager
def _global_rng_from(generator: torch.Generator) -> Iterator[None]:
    """Torch's global generator set to ``generator``'s state for a while, then given back."""
    device = generator.device
    with _GLOBAL_RNG:
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            with torch.random.fork_rng(devices=[index], device_type="cuda"):
                torch.cuda.set_rng_state(generator.get_state(), index)
                yield
        else:
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(generator.get_state())
                yield
