"""Transcripts from the separate whisperx project (``packages/bl-asr``), run as a subprocess and cached.

whisperx pins its own torch, so it lives in its own uv project; bl-data only runs its command line
(configurable) and reads the JSONL it writes (one line per media file: a transcript, or ``{"path", "error"}``).
Transcripts are cached per media file under ``cache_dir``, keyed by the sha256 of the file's content, the model
name and the extra arguments, so a rerun transcribes only new media. Failed files are not cached: they are
retried on the next call.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bl_data.records import Failure

STAGE = "asr"
_BL_ASR_PROJECT = Path(__file__).resolve().parents[3] / "bl-asr"  # in a checkout: <repo>/packages/bl-asr
_STDERR_TAIL = 4000


def default_command() -> tuple[str, ...]:
    """``uv run`` of the bl-asr project of this checkout; ``bl-asr`` on PATH when bl-data is installed alone."""
    if (_BL_ASR_PROJECT / "pyproject.toml").is_file():
        return ("uv", "run", "--locked", "--project", str(_BL_ASR_PROJECT), "bl-asr")
    return ("bl-asr",)


class AsrError(RuntimeError):
    """The ASR command as a whole failed (could not start, exited non-zero, timed out)."""


@dataclass(frozen=True)
class Word:
    """A word with its timing in seconds; whisperx's wav2vec2 alignment leaves some words without times."""

    word: str
    start: float | None
    end: float | None
    score: float | None = None


@dataclass(frozen=True)
class Segment:
    """A stretch of speech, [start, end) seconds of the media."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    """What was said in one media file. ``language`` is None for media without audio."""

    language: str | None
    segments: tuple[Segment, ...] = ()
    duration: float | None = None
    model: str | None = None
    word_timings: str | None = None  # "cross-attention", "wav2vec2" or None (no words)

    @property
    def text(self) -> str:
        """The whole transcript, segment texts joined by spaces."""
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Transcript:
        """Parse one bl-asr JSONL transcript line; raises ValueError naming what is malformed."""
        try:
            segments = tuple(
                Segment(
                    start=float(s["start"]),
                    end=float(s["end"]),
                    text=str(s["text"]),
                    words=tuple(
                        Word(
                            word=str(w["word"]),
                            start=_opt_float(w.get("start")),
                            end=_opt_float(w.get("end")),
                            score=_opt_float(w.get("score")),
                        )
                        for w in s.get("words") or ()
                    ),
                )
                for s in record["segments"]
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed transcript line: {type(e).__name__}: {e}") from e
        return cls(
            language=record.get("language"),
            segments=segments,
            duration=_opt_float(record.get("duration")),
            model=record.get("model"),
            word_timings=record.get("word_timings"),
        )

    def to_record(self) -> dict[str, Any]:
        """The JSON form (the bl-asr line format without ``path``)."""
        return asdict(self)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def file_sha256(path: Path) -> str:
    """sha256 of the file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def transcribe(
    paths: Iterable[Path | str],
    *,
    model: str,
    cache_dir: Path,
    command: Sequence[str] | None = None,
    args: Sequence[str] = (),
    timeout: float | None = None,
) -> dict[Path, Transcript | Failure]:
    """Transcript (or Failure) of every media path, running ``command`` only on the media not yet cached.

    ``command`` is the bl-asr command line without its options (default: :func:`default_command`); it gets
    ``--model MODEL --out JSONL --list FILE`` plus ``args`` (e.g. ``["--language", "en", "--device", "cuda"]``),
    which are part of the cache key. Files with the same content are transcribed once. A file that cannot be
    read, or that bl-asr reports as failed, becomes a :class:`~bl_data.records.Failure` naming it. Raises
    :class:`AsrError` when the command fails as a whole; the files it finished before that are cached.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    results: dict[Path, Transcript | Failure] = {}
    keys: dict[Path, str] = {}
    for path in map(Path, paths):
        try:
            keys[path] = _cache_key(file_sha256(path), model, args)
        except OSError as e:
            results[path] = Failure(str(path), STAGE, f"cannot read media: {e}")
    todo: dict[str, Path] = {}  # cache key -> the first path with that content
    for path, key in keys.items():
        cached = _read_cache(cache_dir / f"{key}.json")
        if cached is not None:
            results[path] = cached
        else:
            todo.setdefault(key, path)
    if todo:
        done = _run(list(todo.items()), model, cache_dir, command or default_command(), args, timeout)
        for path, key in keys.items():
            if path not in results:
                results[path] = _for_path(done[key], path)
    return {path: results[path] for path in dict.fromkeys(map(Path, paths))}


def transcribe_folder(
    folder: Path,
    command: Sequence[str] | None,
    model: str,
    cache_dir: Path,
    *,
    failures: list[Failure] | None = None,
) -> dict[str, str]:
    """``{str(media path): transcript text}`` for the videos in ``folder``, as the importers name them.

    Media without speech get no entry; failed files are appended to ``failures`` when it is given.
    """
    from bl_data.sources._common import VIDEO_EXTENSIONS, index_media

    media = sorted(index_media(Path(folder), tuple(e for e in VIDEO_EXTENSIONS if e != "gif")).values())
    texts: dict[str, str] = {}
    for path, result in transcribe(media, model=model, cache_dir=cache_dir, command=command).items():
        if isinstance(result, Failure):
            if failures is not None:
                failures.append(result)
        elif result.text:
            texts[str(path)] = result.text
    return texts


def _cache_key(content_sha256: str, model: str, args: Sequence[str]) -> str:
    return hashlib.sha256("\0".join([content_sha256, model, *args]).encode()).hexdigest()


def _read_cache(path: Path) -> Transcript | None:
    try:
        return Transcript.from_record(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):  # missing, or damaged: a miss, transcribed and written again
        return None


def _write_cache(path: Path, transcript: Transcript) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(transcript.to_record(), ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a killed run never leaves half an entry


def _for_path(result: Transcript | Failure, path: Path) -> Transcript | Failure:
    """``result`` of a file with the same content, reported for ``path``."""
    if isinstance(result, Failure):
        return Failure(str(path), result.stage, result.reason)
    return result


def _run(
    todo: list[tuple[str, Path]],
    model: str,
    cache_dir: Path,
    command: Sequence[str],
    args: Sequence[str],
    timeout: float | None,
) -> dict[str, Transcript | Failure]:
    """Run the command on ``todo`` ((key, path) pairs); results by key, each transcript cached."""
    by_input = {str(path.resolve()): (key, path) for key, path in todo}
    with tempfile.TemporaryDirectory(prefix="bl-asr-") as tmp:
        listing, out, log = Path(tmp) / "media.txt", Path(tmp) / "transcripts.jsonl", Path(tmp) / "stderr.log"
        listing.write_text("".join(f"{p}\n" for p in by_input), encoding="utf-8")
        argv = [*command, "--model", model, "--out", str(out), "--list", str(listing), *args]
        returncode = _call(argv, log, timeout)
        results = _read_output(out, by_input, cache_dir) if out.exists() else {}
        missing = [str(path) for key, path in todo if key not in results]
        if returncode != 0 and missing:
            what = (
                f"timed out after {timeout} s" if returncode is None else f"exited with status {returncode}"
            )
            tail = log.read_bytes()[-_STDERR_TAIL:].decode(errors="replace")
            raise AsrError(
                f"ASR command {' '.join(command)!r} {what}; no transcript for {len(missing)} file(s): "
                f"{', '.join(missing[:10])}\n--- its stderr (end) ---\n{tail}"
            )
    for key, path in todo:
        if key not in results:
            results[key] = Failure(str(path), STAGE, "the ASR command wrote no line for this file")
    return results


def _call(argv: Sequence[str], log: Path, timeout: float | None) -> int | None:
    """Run ``argv`` with its output into ``log``; its exit status, or None when it timed out.

    It runs in its own process group, killed whole on a timeout or an interrupt (``uv run`` would leave
    its bl-asr child running).
    """
    with log.open("wb") as out:
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        except OSError as e:
            raise AsrError(f"cannot run the ASR command {argv[0]!r}: {e}") from e
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _read_output(
    out: Path, by_input: dict[str, tuple[str, Path]], cache_dir: Path
) -> dict[str, Transcript | Failure]:
    """Parse the JSONL (a torn last line is skipped); transcripts are cached as they are read."""
    results: dict[str, Transcript | Failure] = {}
    for line in out.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or record.get("path") not in by_input:
            continue
        key, path = by_input[record["path"]]
        if "error" in record:
            results[key] = Failure(str(path), STAGE, f"bl-asr: {record['error']}")
            continue
        try:
            transcript = Transcript.from_record(record)
        except ValueError as e:
            results[key] = Failure(str(path), STAGE, str(e))
            continue
        _write_cache(cache_dir / f"{key}.json", transcript)
        results[key] = transcript
    return results
