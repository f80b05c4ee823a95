"""Code both sides share: config loading, WAV streaming, the local voice. No heavy imports."""
