"""ASR, one stage for both engines: a resident ``bl-asr serve`` process (``packages/bl-asr``) and a cache.

    with AsrServer(AsrSpec(model="large-v3"), cache_dir=out / "asr-cache") as asr:
        results = asr.transcribe([video])   # {path: Transcript | Failure}

whisperx pins its own torch, so it lives in its own uv project; bl-data runs its command line (configurable)
in its long-lived mode, ``bl-asr serve``: the model is loaded once, then each media path written to its stdin
is answered by one JSON line (a transcript, or ``{"path", "error"}``). A server that dies is started again
for the next file; the file it died on is that file's Failure, with the reason. Transcripts are cached per
media file under ``cache_dir``, keyed by the sha256 of the file's content, the model name and the extra
arguments, so a rerun transcribes only new media. Failed files are not cached: they are retried next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from bl_data.records import Failure, Post
from bl_data.sources._common import VIDEO_EXTENSIONS, file_sha256

STAGE = "asr"
_BL_ASR_PROJECT = Path(__file__).resolve().parents[3] / "bl-asr"  # in a checkout: <repo>/packages/bl-asr
_STDERR_TAIL = 4000


def default_command() -> tuple[str, ...]:
    """``uv run`` of the bl-asr project of this checkout; ``bl-asr`` on PATH when bl-data is installed alone."""
    if (_BL_ASR_PROJECT / "pyproject.toml").is_file():
        return ("uv", "run", "--locked", "--project", str(_BL_ASR_PROJECT), "bl-asr")
    return ("bl-asr",)


class AsrError(RuntimeError):
    """The ASR server cannot run at all (the command does not start, or the model does not load)."""


@dataclass(frozen=True)
class AsrSpec:
    """How to run ASR: bl-asr's command (without ``serve``; None: `default_command`), the model, and extra
    options (e.g. ``("--language", "en", "--device", "cuda")``, part of the cache key); `timeout` per file."""

    model: str = "large-v3"
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] = ()
    timeout: float | None = None

    def argv(self) -> list[str]:
        return [*(self.command or default_command()), "serve", "--model", self.model, *self.args]


def asr_media(post: Post) -> Path | None:
    """The media file the ASR stage transcribes for a post: a video file, not a GIF (GIFs have no audio)."""
    path = post.media_path
    if path is None or path.suffix.lower().lstrip(".") not in _ASR_EXTENSIONS:
        return None
    return path


_ASR_EXTENSIONS = frozenset(VIDEO_EXTENSIONS) - {"gif"}


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


class AsrServer:
    """A resident ``bl-asr serve`` process (the model loaded once) behind bl-data's per-file cache.

    `loads` counts the server starts (model loads); `busy_s` the seconds spent transcribing. Not thread-safe:
    one caller at a time.
    """

    def __init__(self, spec: AsrSpec, cache_dir: Path) -> None:
        self.spec, self.cache_dir = spec, cache_dir
        self.loads, self.load_s, self.busy_s = 0, 0.0, 0.0
        self._proc: subprocess.Popen[str] | None = None
        self._log: IO[bytes] | None = None
        self._broken: AsrError | None = None  # a server that cannot start is not started again
        cache_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> AsrServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the server and wait for its model; raises AsrError when it cannot run at all."""
        if self._broken is not None:
            raise self._broken
        started = time.perf_counter()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  (the server's stderr, for as long as it runs)
        argv = self.spec.argv()
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                text=True,
                encoding="utf-8",
                start_new_session=True,
            )
        except OSError as e:
            self._log.close()
            self._broken = AsrError(f"cannot run the ASR command {argv[0]!r}: {e}")
            raise self._broken from e
        ready = self._read_line(None)
        if not (isinstance(ready, dict) and ready.get("ready")):
            why = self._stop()
            self._broken = AsrError(f"the ASR server {' '.join(argv)!r} did not start: {why}")
            raise self._broken
        self.loads += 1
        self.load_s += time.perf_counter() - started

    def close(self) -> None:
        """End the server (its stdin closed, then killed if it lingers)."""
        if self._proc is not None:
            self._stop(grace=5.0)

    def transcribe(self, paths: Iterable[Path | str]) -> dict[Path, Transcript | Failure]:
        """Transcript (or Failure) of every media path, asking the server only for media not yet cached.

        Files with the same content are transcribed once; a file that cannot be read, that bl-asr reports as
        failed, or that the server died on or timed out on, becomes a Failure naming it.
        """
        results: dict[Path, Transcript | Failure] = {}
        done: dict[str, Transcript | Failure] = {}  # cache key -> result, for copies of one content
        for path in map(Path, paths):
            try:
                key = _cache_key(file_sha256(path), self.spec.model, self.spec.args)
            except OSError as e:
                results[path] = Failure(str(path), STAGE, f"cannot read media: {e}")
                continue
            if key not in done:
                done[key] = _read_cache(self.cache_dir / f"{key}.json") or self._ask(path, key)
            results[path] = _for_path(done[key], path)
        return results

    def _ask(self, path: Path, key: str) -> Transcript | Failure:
        """One file through the server (started if needed); the transcript is cached."""
        if self._proc is None:
            self.start()
        assert self._proc is not None and self._proc.stdin is not None
        started = time.perf_counter()
        try:
            self._proc.stdin.write(f"{path.resolve()}\n")
            self._proc.stdin.flush()
            record = self._read_line(self.spec.timeout)
        except BrokenPipeError:
            record = None
        finally:
            self.busy_s += time.perf_counter() - started
        if record is None or record == "timeout":
            what = f"timed out after {self.spec.timeout} s" if record == "timeout" else "died"
            return Failure(str(path), STAGE, f"the ASR server {what} on this file: {self._stop()}")
        if record.get("path") != str(path.resolve()):
            self._stop()
            return Failure(str(path), STAGE, f"the ASR server answered for {record.get('path')!r}")
        if "error" in record:
            return Failure(str(path), STAGE, f"bl-asr: {record['error']}")
        try:
            transcript = Transcript.from_record(record)
        except ValueError as e:
            return Failure(str(path), STAGE, str(e))
        _write_cache(self.cache_dir / f"{key}.json", transcript)
        return transcript

    def _read_line(self, timeout: float | None) -> Any:
        """The server's next JSON line; None at its end of output, "timeout" when none came in time."""
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            if timeout is not None and not select.select([self._proc.stdout], [], [], timeout)[0]:
                return "timeout"
            line = self._proc.stdout.readline()
            if not line:
                return None
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue  # not a protocol line

    def _stop(self, grace: float = 0.0) -> str:
        """Stop the server; why it ended (exit status and the last line of its stderr)."""
        proc, log = self._proc, self._log
        assert proc is not None and log is not None
        self._proc, self._log = None, None
        with contextlib.suppress(BrokenPipeError):
            if proc.stdin is not None:
                proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.seek(0)
        tail = log.read()[-_STDERR_TAIL:].decode(errors="replace").strip().splitlines()
        log.close()
        return f"exit status {proc.returncode}" + (f"; its stderr ends: {tail[-1]}" if tail else "")


class AsrWorker:
    """The local engine's ASR stage: an `AsrServer` in a thread of its own that transcribes each post's media
    as the post enters decoding, so transcription runs beside decode (not before it).

        posts = asr.feed(posts)       # submits each post's video as it passes
        text = asr.text(post)         # after decode: its transcript, None, or the post's Failure
    """

    def __init__(self, spec: AsrSpec, cache_dir: Path, log: Callable[[Failure], None]) -> None:
        """`log` receives the per-file failures (the sample is prepared without a transcript)."""
        from bl_data.meters import StageMeter

        self.server, self.log = AsrServer(spec, cache_dir), log
        self.meter = StageMeter("asr")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="bl-asr")
        self._pending: dict[str, Future[Transcript | Failure]] = {}

    def feed(self, posts: Iterable[Post]) -> Iterator[Post]:
        for post in posts:
            media = asr_media(post)
            if media is not None:
                self._pending[post.id] = self._thread.submit(self._one, media)
            yield post

    def _one(self, media: Path) -> Transcript | Failure:
        with self.meter.busy(posts=1):
            return self.server.transcribe([media])[media]

    def text(self, post: Post) -> str | Failure | None:
        """The transcript text of `post`'s media (None: no video, no speech, or a logged per-file failure);
        a Failure of the post when the ASR server cannot run at all."""
        future = self._pending.pop(post.id, None)
        if future is None:
            return None
        try:
            result = future.result()
        except AsrError as err:
            return Failure(str(post.media_path), STAGE, str(err).splitlines()[0], post.id)
        if isinstance(result, Failure):
            self.log(result)
            return None
        return result.text or None

    def forget(self, post_id: str) -> None:
        """Drop the transcript of a post that failed before verbalising."""
        future = self._pending.pop(post_id, None)
        if future is not None:
            future.cancel()

    def close(self) -> dict[str, Any]:
        """Stop the thread and the server; the stage's meter snapshot."""
        self._thread.shutdown(wait=True, cancel_futures=True)
        self.server.close()
        self.meter.loads, self.meter.load_s = self.server.loads, self.server.load_s
        return self.meter.snapshot()
