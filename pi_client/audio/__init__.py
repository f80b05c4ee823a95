"""Audio in and out: capture, the earpiece, and the phone's own offline voice."""
