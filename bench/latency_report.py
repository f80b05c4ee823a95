"""The latency results as text: the stage table, the ratio lines, docs/PERFORMANCE.md and docs/latency.png.

The Pi 5 + RTX 4090 projection is built here from the measured parts and published GPU figures;
every projected number says where it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.rig import replace_section

Table = dict[tuple[str, str], dict[str, float]]

# ---------------------------------------------------------------------------- published figures
RTT_SECONDS = 0.030
"""The link to the GPU box: 30 ms round trip (assumption given by the brief)."""
LINK_MBIT = 20.0
"""Downlink for sending a whole WAV in the sequential design, in Mbit/s (assumption)."""
CB_RTF_4090 = 3.1 / 6.5
"""Chatterbox upstream on an RTX 4090: a 6.5 s clip in 3.1 s (resemble-ai/chatterbox#552)."""
CB_RTF_4090_GRAPHS = 2.0 / 6.5
"""Same clip in 2.0 s with CUDA graphs (resemble-ai/chatterbox#552)."""
CB_STREAM_FIRST_AUDIO = 0.47
"""A streaming Chatterbox fork on an RTX 4090: first audio after 0.47 s, RTF 0.5 (fork README, RESEARCH.md)."""
CB_T4_SENTENCE = 5.0
"""For scale: ~5 s per sentence on a T4 (resemble-ai/chatterbox#193)."""
LLM_PROMPT_TPS = 20323.0
"""Llama-3.2-3B Q4_K_M prompt processing on an RTX 4090, pp512 (geerlingguy/ai-benchmarks#43)."""
LLM_DECODE_TPS = 191.0
"""Decode speed of a 7B model on an RTX 4090 (mlc-ai/llm-perf-bench#1); a 3B model decodes faster."""
PROMPT_TOKENS = 120
"""Persona + question as the server sends them, in tokens (estimate)."""
TOKENS_PER_PIECE = 1.3
"""Stand-in pieces are words; English averages ~1.3 tokens per word."""
WHISPER_TINY_GPU_RTFX = 49.44
"""faster-whisper tiny.en on CUDA: 49.44 s of audio per second (Open ASR leaderboard evaluations, Jan 2025;
short read-speech utterances, each padded to Whisper's 30 s window, so the per-call cost is in it)."""

SEGMENTS = ("endpoint", "stt", "llm", "tts", "rest")
SEGMENT_LABELS = {
    "endpoint": "end-of-speech detection",
    "stt": "Whisper STT (Pi)",
    "llm": "LLM (to first sentence / whole reply)",
    "tts": "TTS (first sentence / whole reply)",
    "rest": "request, server, network, transfer",
}


def stage_table(table: Table) -> list[str]:
    """Median stage times as fixed-width lines for the console."""
    head = (f"{'setup':<26} {'design':<10} {'n':>2} {'endpt':>6} {'stt':>5} {'req':>6} {'llm1':>6} {'sent1':>6} "
            f"{'tts1':>6} {'audio1':>7} {'whole':>7} {'v2v':>6}")
    lines = ["median seconds; server stages counted from the request; v2v = end of speech -> first audio", head]
    for (setup, design), m in sorted(table.items()):
        lines.append(
            f"{setup:<26} {design:<10} {int(m['n']):>2} {m['endpoint']:>6.2f} {m['stt']:>5.2f} {m['request']:>6.2f} "
            f"{m['llm_first_token']:>6.2f} {m['first_sentence']:>6.2f} {m['first_synth']:>6.2f} "
            f"{m['first_audio']:>7.2f} {m['whole']:>7.2f} {m['voice_to_first_audio']:>6.2f}"
        )
    return lines


def ratios(table: Table) -> dict[str, float]:
    """Per setup: sequential / streamed time from end of speech to first audio."""
    out = {}
    for (setup, design), m in table.items():
        seq = table.get((setup, "sequential"))
        if design == "streamed" and seq:
            out[setup] = seq["voice_to_first_audio"] / m["voice_to_first_audio"]
    return out


def ratio_lines(table: Table, headline: tuple[str, str]) -> list[str]:
    """One line per setup, then the headline ratio as the very last line."""
    found = ratios(table)
    lines = [f"ratio sequential/streamed, time to first audio, {setup}: {r:.2f}" for setup, r in sorted(found.items())]
    tts, llm = headline
    key = next((s for s in found if s.startswith(tts) and ("stand-in" in s) == (llm == "standin")), None)
    key = key or next(iter(sorted(found)), None)
    if key is not None:
        lines.append(f"time to first audio, sequential / streamed ({key}): {found[key]:.2f}x")
    return lines


# ---------------------------------------------------------------------------- projection


@dataclass(frozen=True)
class Projection:
    """One projected configuration: seconds per segment from end of speech to first audio."""

    label: str
    segments: dict[str, float]
    notes: str

    @property
    def total(self) -> float:
        return sum(self.segments.values())


def project(table: Table) -> list[Projection]:
    """Pi 5 + RTX 4090 over a 30 ms link, from the measured Pi side and server overhead and GPU figures.

    The streamed rows end the turn as the phone does now (Smart Turn); the seed's sequential design
    keeps the fixed silence it had. The last row counts the upload of the utterance to /process-audio.
    """
    piper = table.get(("piper + stand-in LLM", "streamed"))
    seq = table.get(("piper + stand-in LLM", "sequential"))
    if piper is None or seq is None:
        return []
    endpoint, stt = piper["endpoint"], piper["stt"]
    # Server overhead: first audio at the caller minus the LLM's first sentence and the TTS of it.
    overhead = max(0.0, piper["first_audio"] - piper["first_sentence"] - piper["first_synth_seconds"])
    first_tokens = piper["pieces_to_first_sentence"] * TOKENS_PER_PIECE
    all_tokens = piper["pieces"] * TOKENS_PER_PIECE
    llm_first = PROMPT_TOKENS / LLM_PROMPT_TPS + first_tokens / LLM_DECODE_TPS
    llm_all = PROMPT_TOKENS / LLM_PROMPT_TPS + all_tokens / LLM_DECODE_TPS
    speech_first, speech_all = piper["first_chunk_audio"], seq["reply_audio"]
    send_all = speech_all * 24000 * 2 * 8 / (LINK_MBIT * 1e6)
    utterance = piper.get("utterance_seconds") or 0.0
    upload = utterance * 16000 * 2 * 8 / (LINK_MBIT * 1e6)
    server_stt = utterance / WHISPER_TINY_GPU_RTFX + upload
    rest = RTT_SECONDS + overhead

    def streamed(tts: float, stt_seconds: float = stt) -> dict[str, float]:
        return {"endpoint": endpoint, "stt": stt_seconds, "llm": llm_first, "tts": tts, "rest": rest}

    return [
        Projection("streamed sentences, Chatterbox upstream", streamed(speech_first * CB_RTF_4090),
                   f"first sentence {speech_first:.1f} s of speech x RTF {CB_RTF_4090:.2f} (#552)"),
        Projection("streamed sentences, Chatterbox + CUDA graphs", streamed(speech_first * CB_RTF_4090_GRAPHS),
                   f"RTF {CB_RTF_4090_GRAPHS:.2f} (#552)"),
        Projection("streamed inside the sentence (this server), STT on the Pi", streamed(CB_STREAM_FIRST_AUDIO),
                   f"first audio {CB_STREAM_FIRST_AUDIO} s: a streaming fork's figure for the same design"),
        Projection("streamed inside the sentence, STT on the server", streamed(CB_STREAM_FIRST_AUDIO, server_stt),
                   f"{utterance:.1f} s utterance uploaded at {LINK_MBIT:g} Mbit/s ({upload:.2f} s) + "
                   f"Whisper tiny.en on CUDA at {WHISPER_TINY_GPU_RTFX:g}x real time"),
        Projection("sequential (seed), Chatterbox upstream",
                   {"endpoint": piper.get("endpoint_silence") or endpoint, "stt": stt, "llm": llm_all,
                    "tts": speech_all * CB_RTF_4090, "rest": RTT_SECONDS + overhead + send_all},
                   f"fixed silence; whole reply {speech_all:.1f} s of speech x RTF {CB_RTF_4090:.2f}; "
                   f"WAV sent at {LINK_MBIT:g} Mbit/s"),
    ]


# ---------------------------------------------------------------------------- markdown + plot


def _segments(m: dict[str, float], design: str) -> dict[str, float]:
    """Split a measured turn into the plot's segments; the rest makes them add up to the median v2v."""
    if design == "streamed":
        llm, tts = m["first_sentence"], m["first_synth_seconds"]
    else:
        llm, tts = m["llm_done"], max(0.0, m["synth_done"] - m["llm_done"])
    segs = {"endpoint": m["endpoint"], "stt": m["stt"], "llm": llm, "tts": tts}
    segs["rest"] = max(0.0, m["voice_to_first_audio"] - sum(segs.values()))
    return segs


def plot(table: Table, projections: list[Projection], path: Path) -> None:
    """Stacked bars, end of speech to first audio: fast voices measured + projected, and Chatterbox on this CPU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def measured(tts: str) -> list[tuple[str, dict[str, float]]]:
        keys = sorted((k for k in table if k[0].startswith(tts)), key=lambda k: (k[0], k[1] != "streamed"))
        return [(f"measured: {setup}, {design}", _segments(table[(setup, design)], design)) for setup, design in keys]

    panels = [
        ("Piper measured here; Pi 5 + RTX 4090 projected",
         measured("piper") + [(f"PROJECTED: {p.label}", p.segments) for p in projections]),
        ("Chatterbox on this 2-core CPU (random weights, token-capped)", measured("chatterbox")),
    ]
    panels = [p for p in panels if p[1]]
    colors = {"endpoint": "#8da0cb", "stt": "#66c2a5", "llm": "#fc8d62", "tts": "#e78ac3", "rest": "#a6a6a6"}
    heights = [len(rows) for _, rows in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 0.45 * sum(heights) + 2.6), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (title, rows) in zip(axes[:, 0], panels, strict=True):
        for i, (_, segs) in enumerate(rows):
            left = 0.0
            for name in SEGMENTS:
                ax.barh(i, segs[name], left=left, color=colors[name])
                left += segs[name]
            ax.text(left, i, f" {left:.2f} s", va="center", fontsize=8)
        ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(sum(s.values()) for _, s in rows) * 1.15)
        ax.set_title(title, fontsize=10)
    axes[-1, 0].set_xlabel("seconds from the end of the caller's speech to the first reply audio (medians)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[n]) for n in SEGMENTS]
    fig.legend(handles, [SEGMENT_LABELS[n] for n in SEGMENTS], loc="lower center", ncol=3, fontsize=8)
    fig.suptitle("AI Telephone: voice-to-voice latency, streamed vs sequential")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(table: Table, results: list[Any], meta: dict[str, Any], docs: Path) -> None:
    """Write the latency section of docs/PERFORMANCE.md and docs/latency.png."""
    projections = project(table)
    plot(table, projections, docs / "latency.png")
    lines = [
        "## Latency of one phone turn (measured here)",
        "",
        f"`python -m bench.latency --runs {meta['runs']}` on {meta['date']}: {meta['cpus']} CPUs ({meta['machine']}), "
        f"no GPU, load average at the end {meta['load_average'][0]:.1f} (other work shared the machine), "
        f"{meta['runs']} measured turns per setup and design ({meta['chatterbox_runs']} with Chatterbox), "
        f"one unmeasured warm-up turn per setup; {meta['seconds']:.0f} s in all. Medians, in seconds.",
        "",
        "Stages: **endpoint** = audio time from the last speech frame to the phone's end-of-turn decision "
        "(Smart Turn after a short silence, as the phone does by default; live, this is real time); "
        "**stt** = Whisper tiny.en on the utterance, on the Pi's side; then, counted from the moment "
        "the request is sent: **req** = response headers, **llm1** = first LLM token, **sent1** = first "
        "sentence complete (the server's splitter), **tts1** = first sentence synthesized (first PCM out of "
        "the engine), **audio1** = first audio byte at the caller, **whole** = last byte; "
        "**v2v** = endpoint + stt + audio1, the silence the caller hears.",
        "",
        "| setup | design | n | endpoint | stt | req | llm1 | sent1 | tts1 | audio1 | whole | v2v |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (setup, design), m in sorted(table.items()):
        lines.append(
            f"| {setup} | {design} | {int(m['n'])} | {m['endpoint']:.2f} | {m['stt']:.2f} | {m['request']:.2f} | "
            f"{m['llm_first_token']:.2f} | {m['first_sentence']:.2f} | {m['first_synth']:.2f} | "
            f"**{m['first_audio']:.2f}** | {m['whole']:.2f} | **{m['voice_to_first_audio']:.2f}** |"
        )
    piper = table.get(("piper + stand-in LLM", "streamed"))
    if piper is not None and piper.get("endpoint_silence"):
        lines += ["", f"Same utterances, end of turn: Smart Turn **{piper['endpoint']:.2f} s** vs "
                      f"{piper['endpoint_silence']:.2f} s with the fixed silence rule alone; the server's Whisper "
                      f"(/process-audio, this CPU) took {piper['stt_server']:.2f} s on them."]
        cut, whole = piper.get("utterance_seconds", 0.0), piper.get("utterance_silence_seconds", 0.0)
        if whole - cut > 0.3:
            lines += ["", f"**Smart Turn ended the turn early**: it kept {cut:.1f} s of the question against "
                          f"{whole:.1f} s for the silence rule (it judged the clause before the comma a finished "
                          "turn), so the delay above is at that pause, and the rest of the question would come "
                          "as a second turn (issue 9's corpus bench counts such cut-offs)."]
    lines += ["", "Time to first audio, sequential / streamed (end of speech to first audio):", ""]
    lines += [f"- {setup}: **{r:.2f}x**" for setup, r in sorted(ratios(table).items())]
    lines += [
        "",
        "What the setups are: the *stand-in LLM* is the Ollama protocol stand-in answering a fixed three-sentence "
        "reply at 150 ms to the first token and 30 ms per word piece (GPU-like timing); *SmolLM2* is the real "
        f"SmolLM2-135M (llama.cpp, CPU, greedy, at most {meta['smollm2_tokens']} tokens) served over the same "
        "protocol (its answers are nonsense, here in French; only their timing matters). *Piper* is the real "
        "fallback voice; *Chatterbox* is the real library on a random-weight "
        f"checkpoint of the true architecture, capped at {meta['chatterbox_tokens']} speech tokens per sentence on "
        "this CPU: its audio is noise and its speed is a CPU's, so its rows show the pipeline's shape with a slow "
        "voice model, not GPU speed. The sequential design runs on the same server, LLM client, voices and "
        "sentence chunks (`bench/sequential.py`); only the order differs. The server's phrase cache is off: "
        "every run repeats the same reply, which a real conversation rarely does.",
        "",
        "Why streaming wins: the first sentence is spoken while the LLM is still writing and while the rest is "
        "being synthesized, so the caller waits for one sentence of speech instead of the whole reply; the slower "
        "the voice model (Chatterbox here, on a CPU), the larger the gain. The whole reply takes about as long "
        "either way.",
        "",
        "![latency](latency.png)",
        "",
        "## Projection: Pi 5 + RTX 4090 over a 30 ms link (projected, not measured)",
        "",
        "Built from the parts measured above (end-of-speech delay, Whisper on the Pi side, the server's own "
        "overhead = audio1 - sent1 - the first sentence's synthesis time, measured with Piper and the stand-in) "
        "and published GPU figures:",
        "",
        f"- Chatterbox on an RTX 4090: a 6.5 s clip in 3.1 s (RTF {CB_RTF_4090:.2f}), 2.0 s with CUDA graphs "
        f"(RTF {CB_RTF_4090_GRAPHS:.2f}) — resemble-ai/chatterbox#552; a streaming fork reports "
        f"{CB_STREAM_FIRST_AUDIO} s to first audio at RTF 0.5 (figures collected in RESEARCH.md); for scale, "
        f"a T4 takes ~{CB_T4_SENTENCE:g} s per sentence (resemble-ai/chatterbox#193).",
        f"- LLM (llama3.2:3b on the 4090): prompt processing {LLM_PROMPT_TPS:,.0f} tokens/s for Llama-3.2-3B Q4_K_M "
        f"(geerlingguy/ai-benchmarks#43), decoding at {LLM_DECODE_TPS:g} tokens/s, the figure for a 7B model on a "
        f"4090 (mlc-ai/llm-perf-bench#1; a 3B model is faster, so this is conservative); prompt {PROMPT_TOKENS} "
        f"tokens, {TOKENS_PER_PIECE} tokens per word.",
        f"- Link: {RTT_SECONDS * 1000:.0f} ms round trip on the kept-alive connection (a fresh TLS connection "
        f"would add two more); the sequential design also sends the whole WAV at {LINK_MBIT:g} Mbit/s (assumption).",
        f"- Whisper tiny.en on the server's GPU: {WHISPER_TINY_GPU_RTFX:g}x real time with faster-whisper on CUDA "
        "(Open ASR leaderboard evaluations, Jan 2025), plus the upload of the utterance as 16 kHz PCM.",
        "- Assumed, not measured: Whisper tiny.en int8 on a Pi 5's four Cortex-A76 cores takes about what it takes "
        "on this 2-core VM (whisper.cpp#89 reports 1.1-1.4 s for tiny on a Pi 5 with whisper.cpp: with that, the "
        "STT-on-the-Pi rows grow by ~1 s, one more reason for STT on the server); speech length per sentence as "
        "Piper speaks it; aplay's start-up is not counted.",
        "",
        "| projected configuration | endpoint | stt | llm | tts | link + server | end of speech → first audio "
        "| basis |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in projections:
        s = p.segments
        lines.append(f"| {p.label} | {s['endpoint']:.2f} | {s['stt']:.2f} | {s['llm']:.2f} | {s['tts']:.2f} | "
                     f"{s['rest']:.2f} | **{p.total:.2f}** | {p.notes} |")
    if projections:
        seed, best_pi, best_server = projections[-1], projections[2], projections[3]
        lines += ["", f"Projected ratio sequential (seed) / streamed sentences (upstream Chatterbox): "
                      f"**{seed.total / projections[0].total:.2f}x**; / streamed inside the sentence with STT on "
                      f"the server: **{seed.total / best_server.total:.2f}x**. Issue 11's goals: ≤ 1.0 s with "
                      f"STT on the server (projected {best_server.total:.2f} s), ≤ 1.3 s with STT on the Pi "
                      f"(projected {best_pi.total:.2f} s)."]
    replace_section(str(docs / "PERFORMANCE.md"), "latency", "\n".join(lines))
