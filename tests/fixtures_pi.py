"""Fixtures for the pi tests."""
