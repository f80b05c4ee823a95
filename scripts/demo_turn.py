"""One phone turn end to end, offline: a spoken question → the Pi client → the server → a spoken reply.

Starts ``python -m cloud_server`` on 127.0.0.1 with the embedded LLM (packaged SmolLM2) and the
Piper voice, speaks a question into a WAV with the phone's own offline voice, runs the Pi client
in one-turn file mode on it, and writes what the earpiece would have played to ``out/reply.wav``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.speech import open_local_voice  # noqa: E402
from common.wav import write_wav  # noqa: E402
from tests.server_rig import free_port, wait_healthy  # noqa: E402

_LOGGER = logging.getLogger("demo")
DEMO_CONFIG = """
server:
  llm: {backend: embedded, max_tokens: 60}
  tts: {engine: piper}
"""


def main() -> int:
    """Run the turn and print what was said and heard."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--question", default="What is the capital of France?")
    parser.add_argument("--output", default=str(ROOT / "out" / "reply.wav"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    work = Path(tempfile.mkdtemp(prefix="ai-telephone-demo-"))
    config_path = work / "config.yaml"
    config_path.write_text(DEMO_CONFIG)
    question_wav = work / "question.wav"
    voice = open_local_voice(None)
    pcm = b"".join(voice.synthesize(args.question))
    silence = b"\x00\x00" * int(voice.sample_rate * 0.8)
    write_wav(str(question_wav), silence + pcm + silence * 2, voice.sample_rate)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, AI_TELEPHONE_CONFIG=str(config_path), AI_TELEPHONE_API_KEY=secrets.token_urlsafe(24))
    env.pop("OLLAMA_HOST", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "cloud_server", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env
    )
    try:
        health = wait_healthy(url, server, timeout=120.0)
        if health is None:
            raise SystemExit(f"demo: the server did not become healthy (exit code {server.poll()})")
        _LOGGER.info("server healthy: %s", json.dumps(health))
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pi_client", "--server", url, "--input-wav", str(question_wav),
             "--output-wav", args.output],
            cwd=ROOT, env=env, timeout=300, check=False,
        )
        if result.returncode != 0:
            _LOGGER.error("pi_client exited with %d", result.returncode)
            return result.returncode
        _LOGGER.info("turn done in %.1f s; the earpiece audio is in %s", time.monotonic() - t0, args.output)
        return 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
