"""Fixtures for the deploy tests."""
