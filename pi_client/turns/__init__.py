"""Turn-taking: voice activity, endpointing and speech to text."""
