"""One caller's sentence inside the batched T3 decoder: its prefill, its knobs, its sampler, its tokens.

Everything model-specific is here, written with chatterbox-tts's own modules (``prepare_input_embeds``,
the transformer, ``speech_emb``, ``speech_pos_emb``, ``speech_head``) and the same Hugging Face logits
processors, in the same order, as the library's ``T3.inference`` (standard, with CFG) and
``T3.inference_turbo`` (Turbo). The batch loop (t3_batch.py) only stacks rows and merges KV caches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


@dataclass
class Prefilled:
    """A sequence's prompt run through the transformer: its KV cache and the logits for its first token."""

    cache: Any
    logits: torch.Tensor
    """(rows, vocab) logits at the prompt's last position."""
    length: int


@dataclass
class T3Sequence:
    """The state of one sentence being decoded; ``inputs`` are the arguments generate() gave T3."""

    t3: Any
    turbo: bool
    inputs: dict[str, Any]
    budget: int
    seed: int
    rows: int = 1
    """Transformer rows: 2 for standard with CFG (conditional, unconditional), else 1."""
    sampled: list[int] = field(default_factory=list)
    finished: bool = False
    prompt_length: int = 0
    cond_length: int = 0
    """Positions of the voice conditioning at the start of the prompt (the same for every sentence in a voice)."""

    def __post_init__(self) -> None:
        device = self.t3.device
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        self.text_tokens = torch.atleast_2d(self.inputs["text_tokens"]).to(dtype=torch.long, device=device)
        if self.turbo:
            self.rows = 1
            self.processors: Any = _turbo_processors(self.inputs)
        else:
            self.rows = self.text_tokens.shape[0]
            self.rep: Any = RepetitionPenaltyLogitsProcessor(penalty=float(self.inputs["repetition_penalty"]))
            self.min_p: Any = MinPLogitsWarper(min_p=self.inputs["min_p"])
            self.top_p: Any = TopPLogitsWarper(top_p=self.inputs["top_p"])

    # ------------------------------------------------------------------ the prompt

    def prompt_embeds(self) -> torch.Tensor:
        """The prompt as T3.inference feeds it: conditioning, text, start (and BOS) speech token; (rows, n, dim)."""
        t3, hp = self.t3, self.t3.hp
        start = hp.start_speech_token * torch.ones_like(self.text_tokens[:, :1])
        cfg_weight = 0.0 if self.turbo else float(self.inputs["cfg_weight"])
        embeds, self.cond_length = t3.prepare_input_embeds(
            t3_cond=self.inputs["t3_cond"], text_tokens=self.text_tokens, speech_tokens=start, cfg_weight=cfg_weight
        )
        if not self.turbo:  # inference() feeds a BOS speech token at position 0 after the prompt
            bos = torch.tensor([[hp.start_speech_token]], dtype=torch.long, device=t3.device)
            bos_embed = t3.speech_emb(bos) + t3.speech_pos_emb.get_fixed_embedding(0)
            embeds = torch.cat([embeds, bos_embed.expand(embeds.size(0), -1, -1)], dim=1)
        self.prompt_length = embeds.size(1)
        return embeds

    def prefill(self) -> Prefilled:
        """Run the prompt alone (no padding): the sequence's own KV cache and first logits."""
        embeds = self.prompt_embeds()
        out = self.t3.tfmr(inputs_embeds=embeds, use_cache=True)
        logits = self.t3.speech_head(out.last_hidden_state[:, -1, :])
        return Prefilled(out.past_key_values, logits, self.prompt_length)

    # ------------------------------------------------------------------ each step

    def sample(self, logits: torch.Tensor) -> int:
        """Pick this sequence's next token from its rows' logits (rows, vocab); marks it finished at a stop."""
        token = self._sample_turbo(logits) if self.turbo else self._sample_standard(logits)
        if token is None:
            self.finished = True
            return -1
        self.sampled.append(token)
        stop = token == self.t3.hp.stop_speech_token
        if stop or len(self.sampled) >= self.budget:
            self.finished = True
        return token

    def next_embeds(self) -> torch.Tensor:
        """The embedding of the last token, fed back for the next step: (rows, 1, dim)."""
        t3 = self.t3
        token = torch.tensor([[self.sampled[-1]]], dtype=torch.long, device=t3.device)
        embed = t3.speech_emb(token)
        if not self.turbo:
            embed = embed + t3.speech_pos_emb.get_fixed_embedding(len(self.sampled))
        return embed.expand(self.rows, -1, -1)

    def position(self) -> int:
        """The position of the next token fed back (what the transformer would count alone)."""
        return self.prompt_length + len(self.sampled) - 1

    def output(self) -> torch.Tensor:
        """The tokens in the shape the library's T3 call returns them to generate(): (1, n)."""
        tokens = list(self.sampled)
        if self.turbo and tokens and tokens[-1] == self.t3.hp.stop_speech_token:
            tokens = tokens[:-1]  # inference_turbo drops its stop token; inference keeps it
        return torch.tensor([tokens], dtype=torch.long, device=self.t3.device)

    # ------------------------------------------------------------------ internals

    def _sample_standard(self, logits: torch.Tensor) -> int:
        cond = logits[0:1, :]
        if self.rows == 2:
            cfg = torch.as_tensor(float(self.inputs["cfg_weight"]), device=cond.device, dtype=cond.dtype)
            cond = cond + cfg * (cond - logits[1:2, :])
        start = [self.t3.hp.start_speech_token]
        ids = torch.tensor([start + self.sampled], dtype=torch.long, device=cond.device)
        scores = self.rep(ids, cond)
        temperature = float(self.inputs["temperature"])
        if temperature != 1.0:
            scores = scores / temperature
        scores = self.top_p(ids, self.min_p(ids, scores))
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, num_samples=1, generator=self.generator))

    def _sample_turbo(self, logits: torch.Tensor) -> int | None:
        if self.sampled:
            ids = torch.tensor([self.sampled], dtype=torch.long, device=logits.device)
        else:
            ids = torch.tensor([[self.t3.hp.start_speech_token]], dtype=torch.long, device=logits.device)
        scores = self.processors(ids, logits[0:1, :])
        if self.sampled and bool(torch.all(scores == -float("inf"))):
            return None  # inference_turbo stops here too
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, num_samples=1, generator=self.generator))


def _turbo_processors(inputs: dict[str, Any]) -> LogitsProcessorList:
    """The processors inference_turbo builds from its arguments, in its order."""
    processors = LogitsProcessorList()
    temperature, top_k, top_p = inputs["temperature"], inputs["top_k"], inputs["top_p"]
    if temperature > 0 and temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        processors.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    if inputs["repetition_penalty"] != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(inputs["repetition_penalty"]))
    return processors
