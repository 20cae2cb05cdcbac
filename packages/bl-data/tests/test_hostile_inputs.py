"""Hostile inputs at real scale (issue 25): a poison JSON line or file fails alone, a 0x0 video is named in
words, and a post with 100k comments is prepared in bounded memory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from bl_data.demo import synthesize_youtube
from bl_data.pipeline import PrepareConfig, prepare
from bl_data.records import Failure, Post
from bl_data.shards import done_keys
from bl_data.stages import run_stage
from bl_data.testing import zero_size_avi

DEEP = 1_000  # levels: the 2 KB line; Python's JSON decoder recurses once per level


def _nested(**fields: object) -> bytes:
    """A JSON object with `fields` and `"x"` holding arrays nested `DEEP` levels deep."""
    head = json.dumps(fields)[:-1]
    return f'{head}, "x": {"[" * DEEP}{"]" * DEEP}}}'.encode()


def _failures(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]


def test_deeply_nested_lines_fail_alone_in_reddit_dumps(tmp_path):
    """Item 1: a submission line and a comment line nested 1,000 deep; the other posts are prepared."""
    with pytest.raises(RecursionError):  # the fixture really is a poison pill for the decoder
        json.loads(_nested(id="p0"))
    folder = tmp_path / "reddit"
    (folder / "media").mkdir(parents=True)
    lines, comments = [], []
    for i, pid in enumerate(["p1", "p2", "p3"]):
        Image.new("RGB", (40, 30), (60 * i, 90, 30)).save(folder / "media" / f"{pid}.jpg")
        lines.append(
            json.dumps({"id": pid, "title": f"post {pid}", "subreddit": "pics", "score": 5}).encode()
        )
        for k, body in enumerate(["a lovely sunny photo of the hills", "what camera did you use here"]):
            comments.append(json.dumps({"link_id": f"t3_{pid}", "body": body, "score": k}).encode())
    Image.new("RGB", (40, 30)).save(folder / "media" / "deep.jpg")
    lines.insert(0, _nested(id="deep", title="t", subreddit="s"))  # the first line, as in the issue
    comments.insert(1, _nested(link_id="t3_p1", body="nested comment"))
    (folder / "RS_2020-01.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    (folder / "RC_2020-01.ndjson").write_bytes(b"\n".join(comments) + b"\n")
    out = tmp_path / "shards"
    report = prepare(PrepareConfig(source="reddit", input=folder, out=out, max_side=64))
    assert done_keys(out) == {"p1", "p2", "p3"}
    deep = {Path(f["input"]).name: f for f in _failures(out) if f["stage"] == "import"}
    for name in ("RS_2020-01.ndjson:1", "RC_2020-01.ndjson:2"):
        assert deep[name]["reason"].startswith("JSON nested too deeply to decode"), deep[name]
    assert report["media"]["written"] == 3 and report["media"]["failed"] == {"import": 1}  # deep.jpg


@pytest.mark.parametrize("name", ["aaa", "demo250000x"])  # sorts first / between the valid posts
def test_a_deeply_nested_info_json_fails_alone(tmp_path, name):
    """Item 1: a yt-dlp info.json nested 1,000 deep; every valid post is still prepared."""
    folder = synthesize_youtube(tmp_path / "dl", 2, seed=25)
    (folder / f"{name}.info.json").write_bytes(_nested(id=name, title="t", view_count=10**6, like_count=10))
    out = tmp_path / "shards"
    report = prepare(PrepareConfig(source="youtube", input=folder, out=out, max_side=64))
    assert done_keys(out) == {"demo250000", "demo250001"} and report["media"]["written"] == 2
    (failure,) = _failures(out)
    assert failure["input"] == str(folder / f"{name}.info.json") and failure["stage"] == "import"
    assert failure["reason"] == (
        f"JSON nested too deeply to decode (the limit is about {sys.getrecursionlimit()} levels)"
    )


def test_a_0x0_video_is_named_in_words(tmp_path):
    """Item 5: pyscenedetect asserts on a 0x0 video; its reason says what is wrong with the file."""
    folder = synthesize_youtube(tmp_path / "dl", 1, seed=26)
    avi = zero_size_avi(folder / "zero.avi")
    info = json.loads((folder / "demo260000.info.json").read_text()) | {"id": "zero", "heatmap": None}
    (folder / "zero.info.json").write_text(json.dumps(info | {"duration": 2.0}))
    out = tmp_path / "shards"
    prepare(PrepareConfig(source="youtube", input=folder, out=out, max_side=64))
    (failure,) = _failures(out)
    assert (failure["input"], failure["stage"]) == (str(avi), "media")
    assert failure["reason"] == "video has 0×0 frames (no picture size)"
    assert done_keys(out) == {"demo260000"}


def test_an_exception_without_a_message_is_explained_by_its_source_line(tmp_path):
    """Item 5: an unforeseen bare `assert` (in a module pytest does not rewrite) names the check that failed."""
    (tmp_path / "decoder25.py").write_text("def analyse(width):\n    assert width > 0\n")
    sys.path.insert(0, str(tmp_path))
    try:
        from decoder25 import analyse
    finally:
        sys.path.remove(str(tmp_path))
    post = Post(id="p1", source="youtube", media_path=Path("/data/p1.mp4"), title="t")
    failure = run_stage("media", post, analyse, 0)
    assert isinstance(failure, Failure)
    assert (
        failure.reason
        == "unexpected AssertionError at decoder25.py:2: no message, raised by `assert width > 0`"
    )
