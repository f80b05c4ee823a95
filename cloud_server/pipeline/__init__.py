"""The reply pipeline: admission, conversation sessions, sentence splitting, LLM text to streamed speech."""
