"""What `python -m deploy.vastai up` rents and installs: every default lives here, once."""

from __future__ import annotations

from dataclasses import dataclass

LABEL_DEFAULT = "ai-telephone"


@dataclass(frozen=True)
class OfferCriteria:
    """Which Vast.ai offers can run the server (torch 2.6.0 cu124, Chatterbox, an Ollama model)."""

    num_gpus: int = 1
    """GPUs per instance; the server holds one model on one GPU."""
    min_gpu_ram_gb: float = 16.0
    """Least GPU memory, in GB (Chatterbox ~4 GB + a 3B Ollama model ~3 GB, with headroom)."""
    min_cuda: float = 12.4
    """Least CUDA version the host driver supports (torch 2.6.0 is built for CUDA 12.4)."""
    min_compute_cap: int = 700
    """Least compute capability x100 (700 = Volta sm_70; torch 2.6 cu124 has kernels from sm_50)."""
    max_compute_cap: int = 900
    """Highest compute capability x100: torch 2.6 has no kernels past sm_90 (RTX 50xx is sm_120)."""
    excluded_gpu_names: tuple[str, ...] = ("RTX 50", "B200", "GB200", "RTX PRO 6000")
    """GPU name fragments never rented (Blackwell: no torch 2.6 kernels), whatever they report."""
    min_reliability: float = 0.98
    """Least host reliability score, 0-1."""
    max_dollars_per_hour: float = 1.0
    """Price ceiling, in $/hour (GPU + storage + everything)."""
    min_disk_gb: float = 50.0
    """Disk to allocate and require, in GB (image, venv, Ollama model, Chatterbox weights)."""
    min_inet_down_mbps: float = 200.0
    """Least download bandwidth, in Mbit/s (several GB are fetched at start)."""
    min_cpu_ghz: float = 3.0
    """Least host CPU clock (``cpu_ghz``), in GHz: with a fast GPU, Chatterbox's token loop is bound by the
    host's single-thread speed (one report: ~140 steps/s on a desktop host, ~40 on a 2-2.5 GHz EPYC)."""
    min_direct_ports: int = 1
    """Least directly mapped ports (the server's TLS port must be reachable)."""
    order: str = "dlperf_per_dphtotal"
    """Offer field ranked best-first (descending); dph_total is ranked cheapest-first."""
    limit: int = 40
    """How many offers to ask the API for."""


@dataclass(frozen=True)
class InstancePlan:
    """What runs on the rented instance."""

    image: str = "pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime"
    """Docker image: Python 3.11 with torch 2.6.0 already in it (the pin chatterbox-tts wants)."""
    repo_url: str | None = None
    """Git URL of this project the instance clones; None uses this checkout's `origin` remote."""
    repo_ref: str = "main"
    """Branch or tag the instance checks out."""
    ollama_model: str = "llama3.2:3b"
    """Ollama model pulled and used for replies."""
    chatterbox_model: str = "standard"
    """Chatterbox model whose weights are fetched: standard or turbo."""
    container_port: int = 8000
    """Port the server (scripts/serve: HAProxy in front of gunicorn) serves TLS on inside the container
    (mapped to a public port by Vast)."""
    server_settings: tuple[str, ...] = ()
    """Server config overrides, ``server.key.path=value``, passed to the instance as environment."""
    label: str = LABEL_DEFAULT
    """Instance label; `up` reuses a running instance with this label instead of renting another."""


@dataclass(frozen=True)
class Timing:
    """How long `up` waits, and how often it looks."""

    start_timeout_seconds: float = 900.0
    """Longest wait for an instance to reach `running`, in seconds."""
    health_timeout_seconds: float = 1800.0
    """Longest wait for /health to say ok once running (installs and downloads), in seconds."""
    degraded_grace_seconds: float = 180.0
    """A server answering `degraded` this long (its models loaded, one failed) counts as failed, in seconds."""
    poll_seconds: float = 10.0
    """Pause between status or health polls, in seconds."""
    progress_seconds: float = 60.0
    """An unchanged state is logged again this often, in seconds."""
    max_attempts: int = 3
    """Offers tried before `up` gives up."""
