"""Fixtures for the tts tests."""
