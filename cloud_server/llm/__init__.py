"""The LLM seam and its backends (Ollama, embedded llama.cpp)."""
