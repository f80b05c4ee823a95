"""Text-to-speech engines behind one small interface (``base.TTSEngine``)."""
