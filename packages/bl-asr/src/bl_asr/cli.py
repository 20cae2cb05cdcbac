"""``bl-asr``: transcribe media files with whisperx into JSONL, one line per file, resumable.

``bl-asr serve``: a long-lived mode for a driver that keeps the model resident: the model is loaded once,
then each media path read from stdin (one per line) is answered by one JSON line on stdout, as the JSONL.

Each finished file is appended and flushed at once, so a killed run loses nothing finished; a rerun skips
every path already in the output (``--retry-errors`` redoes the failed ones). A file that fails becomes
``{"path", "error"}`` and the run goes on. Exit status: 0 when every file has a line (transcript or error),
2 on bad usage or when the model cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any


def parse_args(argv: Sequence[str] | None = None, *, serve: bool = False) -> argparse.Namespace:
    """The command line; media come as arguments and/or ``--list FILE`` (one path per line), or on stdin
    with ``serve``."""
    if serve:
        parser = argparse.ArgumentParser(prog="bl-asr serve", description=__doc__.splitlines()[2])
    else:
        parser = argparse.ArgumentParser(prog="bl-asr", description=__doc__.splitlines()[0])
        parser.add_argument("media", nargs="*", help="media files (audio or video)")
        parser.add_argument("--list", type=Path, help="a file with one media path per line")
        parser.add_argument("--out", type=Path, required=True, help="JSONL output, appended to")
        parser.add_argument("--retry-errors", action="store_true", help="redo paths whose line is an error")
    parser.add_argument(
        "--model", required=True, help="CTranslate2 Whisper model directory or faster-whisper name"
    )
    parser.add_argument("--language", help="language code; default: detected per file (multilingual models)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--compute-type", choices=["int8", "float16", "float32", "default"], default="default"
    )
    parser.add_argument("--vad", choices=["pyannote", "silero"], default="pyannote")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads of CTranslate2 (0: its default)")
    parser.add_argument(
        "--no-word-timestamps", action="store_true", help='skip cross-attention word timings ("words": [])'
    )
    parser.add_argument("--align", action="store_true", help="wav2vec2 word alignment (downloads a model)")
    parser.add_argument(
        "--diarize", action="store_true", help="speaker labels (downloads a model, needs HF_TOKEN)"
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def read_media_list(media: Iterable[str], list_file: Path | None) -> list[str]:
    """The media paths in order, without blanks or duplicates."""
    paths = list(media)
    if list_file is not None:
        paths += [line.strip() for line in list_file.read_text(encoding="utf-8").splitlines()]
    return list(dict.fromkeys(p for p in paths if p))


def read_done(out: Path, *, retry_errors: bool) -> set[str]:
    """Paths that already have a line in ``out``; a torn last line (from a killed run) is ignored."""
    done: set[str] = set()
    if not out.exists():
        return done
    for line in out.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("path"), str):
            if retry_errors and "error" in record:
                done.discard(record["path"])
            else:
                done.add(record["path"])
    return done


def open_for_append(out: Path) -> IO[str]:
    """Open ``out`` for appending, first ending a torn last line so that new records start on their own line."""
    out.parent.mkdir(parents=True, exist_ok=True)
    torn = False
    if out.exists() and out.stat().st_size > 0:
        with out.open("rb") as f:
            f.seek(-1, 2)
            torn = f.read(1) != b"\n"
    stream = out.open("a", encoding="utf-8")
    if torn:
        stream.write("\n")
    return stream


def write_line(stream: IO[str], record: dict[str, Any]) -> None:
    """Append one record and flush it to the OS."""
    stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    stream.flush()


def load_transcriber(args: argparse.Namespace) -> Any:
    """The `Transcriber` of the command line's options; None (the reason on stderr) when it cannot load."""
    from bl_asr.transcribe import AsrOptions, Transcriber  # heavy (torch, whisperx): only when there is work

    options = AsrOptions(
        model=args.model,
        language=args.language,
        batch_size=args.batch_size,
        device=args.device,
        compute_type=args.compute_type,
        vad=args.vad,
        word_timestamps=not args.no_word_timestamps,
        align=args.align,
        diarize=args.diarize,
        threads=args.threads,
    )
    try:
        return Transcriber(options)
    except Exception as e:  # any load failure ends the run: nothing can be transcribed
        print(f"bl-asr: cannot load model {args.model!r}: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def transcribe_or_error(transcriber: Any, path: str) -> dict[str, Any]:
    """The file's transcript record, or ``{"path", "error"}``: one bad file never stops the run."""
    try:
        return transcriber.transcribe(path)
    except Exception as e:  # any failure of this file becomes its error line
        return {"path": path, "error": f"{type(e).__name__}: {e}".strip()}


def serve(argv: Sequence[str]) -> int:
    """``bl-asr serve``: load the model once, then answer each stdin path with one JSON line on stdout.

    The first line is ``{"ready": true, "model": ...}`` once the model is loaded. Anything the libraries
    print goes to stderr (fd 1 is redirected), so stdout carries only the protocol. Exits at end of input.
    """
    args = parse_args(argv, serve=True)
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # C and Python prints of whisperx, pyannote, CTranslate2 go to stderr
    sys.stdout = sys.stderr
    transcriber = load_transcriber(args)
    if transcriber is None:
        return 2
    write_line(protocol, {"ready": True, "model": args.model})
    for line in sys.stdin:
        path = line.rstrip("\n")
        if not path:
            continue
        start = time.perf_counter()
        record = transcribe_or_error(transcriber, path)
        write_line(protocol, record)
        status = f"FAILED: {record['error'][:200]}" if "error" in record else "done"
        print(f"bl-asr serve: {path}: {status} ({time.perf_counter() - start:.1f}s)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    args = parse_args(argv)
    try:
        paths = read_media_list(args.media, args.list)
    except OSError as e:
        print(f"bl-asr: cannot read --list {args.list}: {e}", file=sys.stderr)
        return 2
    done = read_done(args.out, retry_errors=args.retry_errors)
    todo = [p for p in paths if p not in done]
    print(
        f"bl-asr: {len(todo)} to transcribe, {len(paths) - len(todo)} already in {args.out}", file=sys.stderr
    )
    if not todo:
        return 0

    transcriber = load_transcriber(args)
    if transcriber is None:
        return 2

    failed = 0
    with open_for_append(args.out) as stream:
        for i, path in enumerate(todo, 1):
            start = time.perf_counter()
            record = transcribe_or_error(transcriber, path)
            if "error" in record:
                status = f"FAILED: {record['error'][:200]}"
                failed += 1
            else:
                status = f"{len(record['segments'])} segments, language {record['language']}"
            write_line(stream, record)
            print(
                f"bl-asr: [{i}/{len(todo)}] {path}: {status} ({time.perf_counter() - start:.1f}s)",
                file=sys.stderr,
            )
    print(f"bl-asr: {len(todo) - failed} transcribed, {failed} failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
