"""An ALSA "sound card" made of files, for a machine with no /dev/snd (RESEARCH.md, Audio without a sound card).

Capture reads raw samples from a file (``type file`` over ``null`` with ``infile``); playback writes a
WAV file; an ``asym`` PCM joins them as ``default``. ALSA reads its configuration once per process,
so code under test runs in a subprocess started with :func:`AlsaRig.env`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"
REPO_ROOT = Path(__file__).resolve().parent.parent

_ASOUNDRC = """\
pcm.rig_capture {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
pcm.rig_playback {{
    type file
    slave.pcm "null"
    file "{outfile}"
    format "wav"
}}
pcm.!default {{
    type asym
    capture.pcm "rig_capture"
    playback.pcm "rig_playback"
}}
"""


@dataclass(frozen=True)
class AlsaRig:
    """File paths of one rig: what the "microphone" hears and where the "earpiece" output lands."""

    conf: Path
    infile: Path
    outfile: Path

    def feed(self, pcm: bytes) -> None:
        """Set the samples capture will return; they must already be in the format the app opens (no plug)."""
        self.infile.write_bytes(pcm)

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should see this rig as its default ALSA device."""
        env = dict(os.environ)
        env["ALSA_CONFIG_PATH"] = f"{SYSTEM_ALSA_CONF}:{self.conf}"
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p)
        return env

    def run_python(self, code: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run Python code in a fresh interpreter that uses this rig; raises with its stderr if it fails."""
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=self.env(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return proc


def make_rig(directory: Path) -> AlsaRig:
    """Write an asoundrc for a file-backed capture and playback device under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rig = AlsaRig(conf=directory / "asoundrc", infile=directory / "capture.raw", outfile=directory / "playback.wav")
    rig.infile.write_bytes(b"")
    rig.conf.write_text(_ASOUNDRC.format(infile=rig.infile, outfile=rig.outfile))
    return rig
