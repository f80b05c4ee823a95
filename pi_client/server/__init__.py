"""The phone's line to the cloud server: streamed replies, health checks."""
