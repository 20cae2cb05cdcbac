"""bl-asr: whisperx transcription of media files into JSONL."""

__version__ = "0.1.0"
