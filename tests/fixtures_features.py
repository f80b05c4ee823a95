"""Fixtures for the features tests."""
