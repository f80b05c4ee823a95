"""The people who speak: characters and the voice library."""
