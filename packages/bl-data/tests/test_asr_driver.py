"""bl_data.asr drives a bl-asr-compatible command; here a fake one, so the workspace needs no whisperx."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bl_data.asr import AsrError, Transcript, default_command, transcribe, transcribe_folder
from bl_data.records import Failure

# Speaks bl-asr's command line and JSONL format. Each run appends a line to CALLS (the media it was given).
# A file whose content starts with b"BAD" gets an error line; b"CRASH" makes it exit 3 before that file.
FAKE_ASR = """
import argparse, json, os, sys
p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--out", required=True)
p.add_argument("--list", required=True)
p.add_argument("--language")
a = p.parse_args()
paths = [x for x in open(a.list).read().splitlines() if x]
with open(os.environ["CALLS"], "a") as calls:
    calls.write(json.dumps(paths) + "\\n")
with open(a.out, "a") as out:
    for path in paths:
        data = open(path, "rb").read()
        if data.startswith(b"CRASH"):
            print("fake-asr: decoder crashed", file=sys.stderr)
            sys.exit(3)
        if data.startswith(b"BAD"):
            out.write(json.dumps({"path": path, "error": "InvalidDataError: no media"}) + "\\n")
        else:
            name = os.path.basename(path)
            words = [{"word": "hello", "start": 0.5, "end": 0.9, "score": 0.9},
                     {"word": name, "start": 1.0, "end": 1.6, "score": 0.8}]
            out.write(json.dumps({
                "path": path, "language": a.language or "en", "duration": 2.0,
                "segments": [{"start": 0.5, "end": 1.6, "text": " hello " + name, "words": words},
                             {"start": 1.7, "end": 1.9, "text": "bye", "words": []}],
                "model": a.model, "whisperx_version": "3.8.6", "word_timings": "cross-attention",
            }) + "\\n")
        out.flush()
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    """(command, calls file): the fake ASR command and the log of its invocations."""
    script = tmp_path / "fake_asr.py"
    script.write_text(FAKE_ASR)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("CALLS", str(calls))
    return [sys.executable, str(script)], calls


def _calls(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _media(folder: Path, name: str, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


def test_transcripts_failures_and_cache(tmp_path: Path, fake: tuple[list[str], Path]) -> None:
    command, calls = fake
    media = tmp_path / "media"
    a = _media(media, "a.mp4", b"video a")
    b = _media(media, "b.mp4", b"video b")
    a_copy = _media(media, "a_copy.mp4", b"video a")  # same content: transcribed once
    bad = _media(media, "bad.mp4", b"BAD bytes")
    missing = media / "missing.mp4"
    cache = tmp_path / "cache"

    results = transcribe([a, b, a_copy, bad, missing], model="tiny", cache_dir=cache, command=command)
    assert list(results) == [a, b, a_copy, bad, missing]
    assert len(_calls(calls)) == 1
    assert sorted(_calls(calls)[0]) == sorted(str(p.resolve()) for p in (a, b, bad))
    ta = results[a]
    assert isinstance(ta, Transcript)
    assert ta.language == "en" and ta.model == "tiny" and ta.duration == 2.0
    assert ta.text == "hello a.mp4 bye"
    assert ta.segments[0].words[1].word == "a.mp4" and ta.segments[0].words[1].start == 1.0
    assert results[a_copy] == ta
    failure = results[bad]
    assert isinstance(failure, Failure) and failure.input == str(bad) and failure.stage == "asr"
    assert "InvalidDataError" in failure.reason
    assert isinstance(results[missing], Failure) and "cannot read media" in results[missing].reason

    # Second call on the done files: served from the cache, the command is not run.
    again = transcribe([a, b, a_copy], model="tiny", cache_dir=cache, command=command)
    assert again == {a: ta, b: results[b], a_copy: ta}
    assert len(_calls(calls)) == 1
    # Same content under a new name: still cached. Failures are not cached: retried.
    renamed = _media(tmp_path / "other", "renamed.mp4", b"video b")
    assert transcribe([renamed], model="tiny", cache_dir=cache, command=command)[renamed] == results[b]
    assert len(_calls(calls)) == 1
    transcribe([bad], model="tiny", cache_dir=cache, command=command)
    assert _calls(calls)[-1] == [str(bad.resolve())]
    # Another model or other options: another cache entry.
    other = transcribe([a], model="large-v3", cache_dir=cache, command=command, args=["--language", "de"])[a]
    assert isinstance(other, Transcript) and other.language == "de" and other.model == "large-v3"
    assert len(_calls(calls)) == 3


def test_a_crash_keeps_finished_files_and_names_the_rest(
    tmp_path: Path, fake: tuple[list[str], Path]
) -> None:
    command, calls = fake
    good = _media(tmp_path, "good.mp4", b"fine")
    crash = _media(tmp_path, "crash.mp4", b"CRASH")
    cache = tmp_path / "cache"
    with pytest.raises(AsrError, match=r"exited with status 3.*crash\.mp4(?s:.*)decoder crashed"):
        transcribe([good, crash], model="tiny", cache_dir=cache, command=command)
    assert isinstance(transcribe([good], model="tiny", cache_dir=cache, command=command)[good], Transcript)
    assert len(_calls(calls)) == 1  # good.mp4 was cached before the crash


def test_command_that_cannot_start(tmp_path: Path) -> None:
    media = _media(tmp_path, "a.mp4", b"x")
    with pytest.raises(AsrError, match="cannot run the ASR command"):
        transcribe([media], model="tiny", cache_dir=tmp_path / "c", command=[str(tmp_path / "no-such-asr")])


def test_timeout_kills_the_command(tmp_path: Path) -> None:
    media = _media(tmp_path, "a.mp4", b"x")
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(AsrError, match=r"timed out after 0.5 s; no transcript for 1 file\(s\): .*a\.mp4"):
        transcribe([media], model="tiny", cache_dir=tmp_path / "c", command=sleeper, timeout=0.5)


def test_damaged_cache_entry_is_a_miss(tmp_path: Path, fake: tuple[list[str], Path]) -> None:
    command, calls = fake
    media = _media(tmp_path, "a.mp4", b"x")
    cache = tmp_path / "cache"
    first = transcribe([media], model="tiny", cache_dir=cache, command=command)[media]
    (entry,) = cache.glob("*.json")
    entry.write_text('{"language": "en", "segm')
    assert transcribe([media], model="tiny", cache_dir=cache, command=command)[media] == first
    assert len(_calls(calls)) == 2


def test_transcribe_folder_names_media_as_the_importers_do(
    tmp_path: Path, fake: tuple[list[str], Path]
) -> None:
    command, _ = fake
    folder = tmp_path / "dl"
    video = _media(folder, "abc.mp4", b"v")
    _media(folder, "abc.info.json", b"{}")
    _media(folder, "abc.webp", b"thumbnail")
    bad = _media(folder, "zzz.webm", b"BAD")
    failures: list[Failure] = []
    texts = transcribe_folder(folder, command, "tiny", tmp_path / "cache", failures=failures)
    assert texts == {str(video): "hello abc.mp4 bye"}
    assert [f.input for f in failures] == [str(bad)]


def test_default_command_runs_the_bl_asr_project() -> None:
    command = default_command()
    assert command[-1] == "bl-asr"
    if command[0] == "uv":
        assert (Path(command[command.index("--project") + 1]) / "uv.lock").is_file()


def test_transcript_json_round_trip() -> None:
    record = {
        "language": None,
        "segments": [
            {"start": 0, "end": 1, "text": "x", "words": [{"word": "x", "start": None, "end": None}]}
        ],
    }
    transcript = Transcript.from_record(record)
    assert transcript.segments[0].words[0].start is None
    assert Transcript.from_record(transcript.to_record()) == transcript
    with pytest.raises(ValueError, match="malformed transcript line: KeyError"):
        Transcript.from_record({"segments": [{"start": 0}]})
