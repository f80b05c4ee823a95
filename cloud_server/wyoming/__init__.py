"""The Home Assistant bridge: a Wyoming service on the home network that speaks HTTPS to the voice server.

``python -m cloud_server.wyoming --uri tcp://0.0.0.0:10200 --server https://IP:PORT`` (key in
``AI_TELEPHONE_API_KEY``). Text to speech: the characters and library voices, streamed from
``/v1/audio/speech`` (pcm, 24 kHz) as they are spoken. Speech to text: the server's Whisper through
``/transcribe``. Wyoming has no authentication: bind it to the home network, never the internet.
"""
