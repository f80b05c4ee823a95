"""Provision the AI Telephone server on Vast.ai with the official ``vastai`` SDK (see cli.py)."""
