"""The HTTP routes: core (/process-text, /sessions, /health), voices and audio in, OpenAI-compatible speech."""
