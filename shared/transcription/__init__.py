"""The transcription worker: safe recording download, audio preparation, OpenAI transcription, the handler."""
