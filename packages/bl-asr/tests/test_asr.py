"""bl-asr on real weights and real (synthetic) speech, offline: whisperx pipeline, language detection, CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import SENTENCE

from bl_asr.cli import main, open_for_append, write_line
from bl_asr.transcribe import AsrOptions, Transcriber

SPEECH_START_S = 1.0  # the speech fixture's silence before the sentence


def _check_structure(record: dict[str, Any], path: Path) -> None:
    assert record["path"] == str(path)
    assert record["whisperx_version"].startswith("3.8.")
    assert isinstance(record["duration"], float)
    for segment in record["segments"]:
        assert set(segment) == {"start", "end", "text", "words"}
        assert 0 <= segment["start"] <= segment["end"] <= record["duration"] + 0.1
        assert isinstance(segment["text"], str)
        for word in segment["words"]:
            assert set(word) == {"word", "start", "end", "score"}
            assert segment["start"] <= word["start"] <= word["end"] <= segment["end"] + 0.5
            assert 0.0 <= word["score"] <= 1.0


@pytest.fixture(scope="session")
def tiny_en(tiny_en_model: Path) -> Transcriber:
    return Transcriber(AsrOptions(model=str(tiny_en_model), compute_type="int8", vad="pyannote", threads=2))


def test_tiny_en_transcribes_espeak_speech(tiny_en: Transcriber, speech_mp4: Path) -> None:
    """whisperx's pipeline (pyannote VAD shipped in whisperx, batched faster-whisper) on real tiny.en weights."""
    from whisperx.vads import Pyannote

    assert isinstance(tiny_en.pipeline.vad_model, Pyannote)
    record = tiny_en.transcribe(speech_mp4)
    print("tiny.en transcript:", " | ".join(s["text"] for s in record["segments"]))
    _check_structure(record, speech_mp4)
    assert record["language"] == "en"
    assert record["duration"] == pytest.approx(6.0, abs=0.2)
    assert record["word_timings"] == "cross-attention"
    text = " ".join(s["text"] for s in record["segments"]).lower()
    spoken = {"quick", "brown", "fox", "jumps", "over", "lazy", "dog"}
    heard = spoken & set(re.findall(r"[a-z]+", text))
    assert len(heard) >= 5, f"heard only {sorted(heard)} of {SENTENCE!r} in {text!r}"
    words = [w for s in record["segments"] for w in s["words"]]
    assert len(words) >= 7
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert SPEECH_START_S - 0.3 <= words[0]["start"] <= SPEECH_START_S + 0.5  # the silence is not speech
    assert words[-1]["end"] <= SPEECH_START_S + 4.5  # espeak says it in about 3.3 s


def test_random_large_v3_shaped_model_detects_a_language(
    random_large_v3_model: Path, speech_mp4: Path
) -> None:
    """The multilingual path: 128 mels, vocab 51866, language detected per file. Random weights: structure only."""
    transcriber = Transcriber(AsrOptions(model=str(random_large_v3_model), batch_size=2, threads=2))
    assert transcriber.model.model.is_multilingual
    assert transcriber.model.feat_kwargs["feature_size"] == 128
    record = transcriber.transcribe(speech_mp4)
    _check_structure(record, speech_mp4)
    assert record["language"] in transcriber.model.supported_languages
    assert record["segments"], "the pyannote VAD finds the speech whatever the model says"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cli_writes_transcripts_and_errors_then_resumes(
    tiny_en_model: Path, speech_mp4: Path, corrupt_mp4: Path, tmp_path: Path
) -> None:
    """Good, corrupt, missing and audio-less media -> one line each; a rerun skips every path already written."""
    silent = tmp_path / "silent.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=s=32x32:r=5:d=1",
            str(silent),
        ],
        check=True,
    )
    missing = tmp_path / "missing.mp4"
    out = tmp_path / "out" / "transcripts.jsonl"
    listing = tmp_path / "media.txt"
    listing.write_text(f"{corrupt_mp4}\n\n{missing}\n{silent}\n{speech_mp4}\n")
    cli = [str(Path(sys.executable).parent / "bl-asr"), "--model", str(tiny_en_model), "--out", str(out)]
    args = [
        *cli,
        "--compute-type",
        "int8",
        "--threads",
        "2",
        "--batch-size",
        "4",
        str(speech_mp4),
        "--list",
        str(listing),
    ]
    first = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    records = {r["path"]: r for r in _lines(out)}
    assert len(_lines(out)) == len(records) == 4
    assert "fox" in " ".join(s["text"] for s in records[str(speech_mp4)]["segments"]).lower()
    assert set(records[str(corrupt_mp4)]) == {"path", "error"}
    assert "No such file" in records[str(missing)]["error"]
    assert records[str(silent)]["segments"] == [] and records[str(silent)]["duration"] == pytest.approx(
        1.0, abs=0.1
    )

    second = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "0 to transcribe, 4 already in" in second.stderr
    assert len(_lines(out)) == 4


def test_resume_ignores_a_torn_line_and_reads_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line cut by a kill is not a finished file; the next record starts on its own line. No model needed."""
    out = tmp_path / "t.jsonl"
    out.write_text(json.dumps({"path": "a.mp4", "error": "x"}) + "\n" + '{"path": "b.mp4", "lang')
    (tmp_path / "list.txt").write_text("a.mp4\n")
    assert main(["--model", "unused", "--out", str(out), "--list", str(tmp_path / "list.txt"), "a.mp4"]) == 0
    assert "0 to transcribe, 1 already in" in capsys.readouterr().err
    # b.mp4 is to do; with a model that cannot load, the run stops before writing anything
    assert main(["--model", str(tmp_path / "no-model"), "--out", str(out), "b.mp4"]) == 2
    assert "cannot load model" in capsys.readouterr().err
    with open_for_append(out) as stream:
        write_line(stream, {"path": "b.mp4", "error": "y"})
    lines = out.read_text().splitlines()
    assert lines[1] == '{"path": "b.mp4", "lang' and json.loads(lines[2]) == {"path": "b.mp4", "error": "y"}


def test_serve_loads_once_and_answers_each_stdin_path(
    tiny_en_model: Path, speech_mp4: Path, corrupt_mp4: Path, tmp_path: Path
) -> None:
    """`bl-asr serve`: a ready line, then one JSON line per path in order (errors included), stdout clean."""
    missing = tmp_path / "missing.mp4"
    cli = [str(Path(sys.executable).parent / "bl-asr"), "serve", "--model", str(tiny_en_model)]
    server = subprocess.Popen(
        [*cli, "--compute-type", "int8", "--threads", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = server.communicate(f"{speech_mp4}\n{corrupt_mp4}\n\n{missing}\n{speech_mp4}\n", timeout=600)
    assert server.returncode == 0, err
    ready, *records = [json.loads(line) for line in out.splitlines()]  # every stdout line is JSON
    assert ready == {"ready": True, "model": str(tiny_en_model)}
    assert [r["path"] for r in records] == [str(p) for p in (speech_mp4, corrupt_mp4, missing, speech_mp4)]
    assert "fox" in " ".join(s["text"] for s in records[0]["segments"]).lower()
    assert set(records[1]) == {"path", "error"} and "No such file" in records[2]["error"]
    assert records[3] == records[0]  # the resident model answers the same file the same way
    assert err.count("bl-asr serve:") == 4


def test_serve_exits_2_when_the_model_cannot_load(tmp_path: Path) -> None:
    cli = [str(Path(sys.executable).parent / "bl-asr"), "serve", "--model", str(tmp_path / "no-model")]
    run = subprocess.run(cli, input="a.mp4\n", capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stdout == "" and "cannot load model" in run.stderr
