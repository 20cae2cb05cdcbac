"""bl_data.asr drives a `bl-asr serve`-compatible command; here a fake one, so the workspace needs no whisperx."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from bl_data.asr import AsrError, AsrServer, AsrSpec, AsrWorker, Transcript, asr_media, default_command
from bl_data.records import Failure, Post

# Speaks `bl-asr serve`: a ready line, then one JSON line per stdin path. Each start appends a line to
# STARTS; each path it is asked for, a line to CALLS. A file whose content starts with b"BAD" gets an error
# line; b"CRASH" kills the server (exit 3) before it answers; b"HANG" never answers. --model fail: no start.
FAKE_SERVE = """
import argparse, json, os, sys, time
p = argparse.ArgumentParser()
p.add_argument("mode", choices=["serve"])
p.add_argument("--model", required=True)
p.add_argument("--language")
a = p.parse_args()
open(os.environ["STARTS"], "a").write(a.model + "\\n")
if a.model == "fail":
    print("fake-asr: cannot load model 'fail'", file=sys.stderr)
    sys.exit(2)
print("loading...")  # a library's chatter on stdout: not a protocol line
print(json.dumps({"ready": True, "model": a.model}), flush=True)
for line in sys.stdin:
    path = line.rstrip("\\n")
    open(os.environ["CALLS"], "a").write(path + "\\n")
    data = open(path, "rb").read()
    if data.startswith(b"CRASH"):
        print("fake-asr: decoder crashed", file=sys.stderr)
        sys.exit(3)
    if data.startswith(b"HANG"):
        time.sleep(60)
    if data.startswith(b"BAD"):
        print(json.dumps({"path": path, "error": "InvalidDataError: no media"}), flush=True)
        continue
    name = os.path.basename(path)
    words = [{"word": "hello", "start": 0.5, "end": 0.9, "score": 0.9},
             {"word": name, "start": 1.0, "end": 1.6, "score": 0.8}]
    print(json.dumps({
        "path": path, "language": a.language or "en", "duration": 2.0,
        "segments": [{"start": 0.5, "end": 1.6, "text": " hello " + name, "words": words},
                     {"start": 1.7, "end": 1.9, "text": "bye", "words": []}],
        "model": a.model, "whisperx_version": "3.8.6", "word_timings": "cross-attention",
    }), flush=True)
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[tuple[str, ...], Path, Path]:
    """(command, starts file, calls file): the fake bl-asr, and the logs of its starts and of its files."""
    script = tmp_path / "fake_asr.py"
    script.write_text(FAKE_SERVE)
    starts, calls = tmp_path / "starts.txt", tmp_path / "calls.txt"
    monkeypatch.setenv("STARTS", str(starts))
    monkeypatch.setenv("CALLS", str(calls))
    return (sys.executable, str(script)), starts, calls


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _media(folder: Path, name: str, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


def test_one_server_transcripts_failures_and_cache(tmp_path: Path, fake) -> None:
    command, starts, calls = fake
    media = tmp_path / "media"
    a = _media(media, "a.mp4", b"video a")
    b = _media(media, "b.mp4", b"video b")
    a_copy = _media(media, "a_copy.mp4", b"video a")  # same content: transcribed once
    bad = _media(media, "bad.mp4", b"BAD bytes")
    missing = media / "missing.mp4"
    cache = tmp_path / "cache"
    spec = AsrSpec(model="tiny", command=command)

    with AsrServer(spec, cache) as server:
        results = server.transcribe([a, b, a_copy, bad, missing])
        assert list(results) == [a, b, a_copy, bad, missing]
        assert _lines(calls) == [str(p.resolve()) for p in (a, b, bad)]
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
        # more files later: the same server (the model stays loaded)
        c = _media(media, "c.mp4", b"video c")
        assert server.transcribe([c])[c].text == "hello c.mp4 bye"
        assert server.loads == 1 and _lines(starts) == ["tiny"]

    # a new server on the done files: served from the cache, never asked
    with AsrServer(spec, cache) as server:
        assert server.transcribe([a, b, a_copy]) == {a: ta, b: results[b], a_copy: ta}
        renamed = _media(tmp_path / "other", "renamed.mp4", b"video b")  # same content, new name: cached
        assert server.transcribe([renamed])[renamed] == results[b]
        assert len(_lines(calls)) == 4 and server.loads == 0  # started only when a file needs it
        assert isinstance(server.transcribe([bad])[bad], Failure)  # failures are not cached: asked again
        assert _lines(calls)[-1] == str(bad.resolve())
    # another model or other options: another cache entry
    other = AsrSpec(model="large-v3", command=command, args=("--language", "de"))
    with AsrServer(other, cache) as server:
        transcript = server.transcribe([a])[a]
    assert (
        isinstance(transcript, Transcript) and transcript.language == "de" and transcript.model == "large-v3"
    )


def test_the_file_that_kills_the_server_fails_alone_and_the_server_restarts(tmp_path: Path, fake) -> None:
    command, starts, _ = fake
    good = _media(tmp_path, "good.mp4", b"fine")
    crash = _media(tmp_path, "crash.mp4", b"CRASH")
    after = _media(tmp_path, "after.mp4", b"after")
    with AsrServer(AsrSpec(model="tiny", command=command), tmp_path / "cache") as server:
        results = server.transcribe([good, crash, after])
        assert server.loads == 2 and len(_lines(starts)) == 2
    assert isinstance(results[good], Transcript) and isinstance(results[after], Transcript)
    failure = results[crash]
    assert isinstance(failure, Failure) and failure.input == str(crash)
    assert "died on this file: exit status 3; its stderr ends: fake-asr: decoder crashed" in failure.reason


def test_a_file_that_hangs_times_out_alone(tmp_path: Path, fake) -> None:
    command, _, _ = fake
    hang = _media(tmp_path, "hang.mp4", b"HANG")
    good = _media(tmp_path, "good.mp4", b"fine")
    with AsrServer(AsrSpec(model="tiny", command=command, timeout=1.0), tmp_path / "cache") as server:
        results = server.transcribe([hang, good])
    assert "timed out after 1.0 s on this file" in results[hang].reason
    assert isinstance(results[good], Transcript)


def test_a_server_that_cannot_start_fails_at_once_and_is_not_restarted(tmp_path: Path, fake) -> None:
    command, starts, _ = fake
    media = _media(tmp_path, "a.mp4", b"x")
    server = AsrServer(AsrSpec(model="fail", command=command), tmp_path / "cache")
    for _ in range(2):
        with pytest.raises(AsrError, match=r"did not start: exit status 2; .*cannot load model 'fail'"):
            server.transcribe([media])
    assert _lines(starts) == ["fail"]
    missing = AsrServer(AsrSpec(command=(str(tmp_path / "no-such-asr"),)), tmp_path / "cache")
    with pytest.raises(AsrError, match="cannot run the ASR command"):
        missing.start()


def test_damaged_cache_entry_is_a_miss(tmp_path: Path, fake) -> None:
    command, _, calls = fake
    media = _media(tmp_path, "a.mp4", b"x")
    cache = tmp_path / "cache"
    with AsrServer(AsrSpec(model="tiny", command=command), cache) as server:
        first = server.transcribe([media])[media]
    (entry,) = cache.glob("*.json")
    entry.write_text('{"language": "en", "segm')
    with AsrServer(AsrSpec(model="tiny", command=command), cache) as server:
        assert server.transcribe([media])[media] == first
    assert len(_lines(calls)) == 2


def test_worker_transcribes_beside_the_caller_in_order_of_need(tmp_path: Path, fake) -> None:
    """The local engine's stage: files submitted as posts pass, texts taken after decode, failures logged."""
    command, _, _ = fake
    folder = tmp_path / "dl"
    posts = [
        Post("v1", "youtube", _media(folder, "v1.mp4", b"one"), "t"),
        Post("gif", "youtube", _media(folder, "gif.gif", b"gif"), "t"),  # no audio: not transcribed
        Post("bad", "youtube", _media(folder, "bad.webm", b"BAD"), "t"),
        Post("v2", "youtube", _media(folder, "v2.mkv", b"two"), "t"),
    ]
    logged: list[Failure] = []
    worker = AsrWorker(AsrSpec(model="tiny", command=command), tmp_path / "cache", logged.append)
    fed = list(worker.feed(posts))
    assert fed == posts and threading.active_count() >= 2
    assert [worker.text(post) for post in posts] == ["hello v1.mp4 bye", None, None, "hello v2.mkv bye"]
    assert [f.input for f in logged] == [str(posts[2].media_path)]
    meter = worker.close()
    assert meter["loads"] == 1 and meter["posts"] == 3 and meter["stage"] == "asr"


def test_asr_media_is_a_video_file_not_a_gif() -> None:
    def post(name: str | None) -> Post:
        return Post("x", "reddit", Path(name) if name else None, "t")

    assert [asr_media(post(n)) for n in ("a.mp4", "a.WEBM", "a.gif", "a.jpg", None)] == [
        Path("a.mp4"),
        Path("a.WEBM"),
        None,
        None,
        None,
    ]


def test_default_command_runs_the_bl_asr_project() -> None:
    command = default_command()
    assert command[-1] == "bl-asr"
    assert AsrSpec(model="m").argv()[-4:] == ["bl-asr", "serve", "--model", "m"]
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
    assert json.loads(json.dumps(transcript.to_record()))["language"] is None
