"""whisperx transcription of one media file into a JSON-ready record (segments with word timings).

Word timings come from one of two real mechanisms:

* ``"cross-attention"`` (default, offline): Whisper's own word timestamps, the same method as
  ``faster_whisper.WhisperModel.transcribe(word_timestamps=True)``: dynamic time warping over the decoder's
  cross-attention (the model's alignment heads), run on each whisperx segment after transcription.
* ``"wav2vec2"`` (``align=True``): whisperx's forced alignment with a wav2vec2 model, which is downloaded
  on first use.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import whisperx
from faster_whisper.audio import decode_audio
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import merge_punctuations
from whisperx.asr import FasterWhisperPipeline, WhisperModel
from whisperx.audio import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE, log_mel_spectrogram

WHISPERX_VERSION = importlib.metadata.version("whisperx")

# faster-whisper's defaults for attaching punctuation to the neighbouring word
_PREPEND_PUNCTUATION = "\"'“¿([{-"
_APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"

Device = Literal["cpu", "cuda"]
ComputeType = Literal["int8", "float16", "float32", "default"]
VadMethod = Literal["pyannote", "silero"]


@dataclass(frozen=True)
class AsrOptions:
    """How to transcribe. ``language=None`` detects it per file (multilingual models only)."""

    model: str
    language: str | None = None
    batch_size: int = 8
    device: Device = "cpu"
    compute_type: ComputeType = "default"
    vad: VadMethod = "pyannote"
    word_timestamps: bool = True
    align: bool = False
    diarize: bool = False
    threads: int = 0


class Transcriber:
    """A loaded whisperx pipeline (model + VAD) that turns media files into transcript records."""

    def __init__(self, options: AsrOptions) -> None:
        """Load the CTranslate2 Whisper model (a local directory or a faster-whisper model name) and the VAD."""
        self.options = options
        self.model = WhisperModel(
            options.model,
            device=options.device,
            compute_type=options.compute_type,
            cpu_threads=options.threads,
        )
        language = options.language
        if language is None and not self.model.model.is_multilingual:
            language = "en"  # English-only models cannot detect a language
        self.pipeline: FasterWhisperPipeline = whisperx.load_model(
            options.model,
            device=options.device,
            compute_type=options.compute_type,
            language=language,
            vad_method=options.vad,
            model=self.model,
        )
        self._n_mels: int = self.model.feat_kwargs.get("feature_size") or 80
        self._align_models: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._diarizer: Any = None

    def transcribe(self, path: str | Path) -> dict[str, Any]:
        """Transcribe one media file. Raises on undecodable media; a file without audio gives no segments."""
        duration, has_audio = probe(path)
        audio = decode_audio(str(path), sampling_rate=SAMPLE_RATE) if has_audio else np.zeros(0, np.float32)
        record: dict[str, Any] = {
            "path": str(path),
            "language": None,
            "duration": round(len(audio) / SAMPLE_RATE, 3) if has_audio else duration,
            "segments": [],
            "word_timings": None,
            "model": self.options.model,
            "whisperx_version": WHISPERX_VERSION,
        }
        if audio.size == 0:
            return record
        result = self.pipeline.transcribe(audio, batch_size=self.options.batch_size)
        language: str = result["language"]
        segments: list[dict[str, Any]] = [
            {"start": s["start"], "end": s["end"], "text": s["text"].strip(), "words": []}
            for s in result["segments"]
        ]
        word_timings = None
        if self.options.align and segments:
            segments = self._align(segments, audio, language)
            word_timings = "wav2vec2"
        elif self.options.word_timestamps and segments:
            self._attention_word_timestamps(segments, audio, language)
            word_timings = "cross-attention"
        if self.options.diarize and segments:
            segments = self._diarize(segments, audio)
        record.update(language=language, segments=segments, word_timings=word_timings)
        return record

    def _attention_word_timestamps(
        self, segments: list[dict[str, Any]], audio: np.ndarray, language: str
    ) -> None:
        """Fill each segment's ``words`` by DTW over the cross-attention of its audio chunk, in batches."""
        tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe", language=language
        )
        max_tokens = self.model.max_length - len(tokenizer.sot_sequence) - 1
        alignable = []
        for segment in segments:
            tokens = [t for t in tokenizer.encode(" " + segment["text"]) if t < tokenizer.eot]
            # an empty segment, or one too long to align (never real speech: <= 30 s), keeps "words": []
            if 0 < len(tokens) <= max_tokens:
                alignable.append((segment, tokens))
        step = self.options.batch_size
        for batch in (alignable[i : i + step] for i in range(0, len(alignable), step)):
            features, num_frames = [], []
            for segment, _ in batch:
                chunk = audio[int(segment["start"] * SAMPLE_RATE) : int(segment["end"] * SAMPLE_RATE)][
                    :N_SAMPLES
                ]
                mel = log_mel_spectrogram(chunk, n_mels=self._n_mels, padding=N_SAMPLES - len(chunk))
                features.append(mel.numpy())
                num_frames.append(max(1, len(chunk) // HOP_LENGTH))
            encoder_output = self.model.encode(np.stack(features))
            alignments = self.model.find_alignment(
                tokenizer, [tokens for _, tokens in batch], encoder_output, num_frames
            )
            for (segment, _), alignment in zip(batch, alignments, strict=True):
                merge_punctuations(alignment, _PREPEND_PUNCTUATION, _APPEND_PUNCTUATION)
                segment["words"] = [
                    {
                        "word": timing["word"].strip(),
                        "start": round(segment["start"] + float(timing["start"]), 3),
                        "end": round(segment["start"] + float(timing["end"]), 3),
                        "score": round(float(timing["probability"]), 3),
                    }
                    for timing in alignment
                    if timing["word"].strip()
                ]

    def _align(
        self, segments: list[dict[str, Any]], audio: np.ndarray, language: str
    ) -> list[dict[str, Any]]:
        """whisperx forced alignment (downloads a wav2vec2 model for ``language`` on first use)."""
        if language not in self._align_models:
            self._align_models[language] = whisperx.load_align_model(language, self.options.device)
        model, metadata = self._align_models[language]
        aligned = whisperx.align(segments, model, metadata, audio, self.options.device)
        return [
            {
                "start": s["start"],
                "end": s["end"],
                "text": s["text"].strip(),
                # whisperx leaves words it cannot align (e.g. digits) without times: they are kept as null
                "words": [
                    {"word": w["word"], "start": w.get("start"), "end": w.get("end"), "score": w.get("score")}
                    for w in s.get("words", [])
                ],
            }
            for s in aligned["segments"]
        ]

    def _diarize(self, segments: list[dict[str, Any]], audio: np.ndarray) -> list[dict[str, Any]]:
        """Add ``speaker`` labels (pyannote diarization; downloads its model, needs ``HF_TOKEN``)."""
        if self._diarizer is None:
            from whisperx.diarize import DiarizationPipeline

            self._diarizer = DiarizationPipeline(token=os.environ.get("HF_TOKEN"), device=self.options.device)
        turns = self._diarizer(audio)
        return whisperx.assign_word_speakers(turns, {"segments": segments})["segments"]


def probe(path: str | Path) -> tuple[float | None, bool]:
    """(duration in seconds or None, whether it has an audio stream). Raises on a file PyAV cannot open."""
    with av.open(str(path)) as container:
        duration = container.duration / av.time_base if container.duration is not None else None
        return (round(duration, 3) if duration is not None else None), bool(container.streams.audio)
