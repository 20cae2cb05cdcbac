"""Hostile inputs at real scale (issue 25): a poison JSON line or file fails alone, a 0x0 video is named in
words, and a post with 100k comments is prepared in bounded memory."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bl_data.comment_dedup import near_duplicate_keep
from bl_data.demo import synthesize_youtube
from bl_data.filters import Filters, NearDuplicateCommentsRule, comment_similarity
from bl_data.pipeline import PrepareConfig, prepare
from bl_data.records import Comment, Failure, Post
from bl_data.shards import done_keys, open_shards
from bl_data.stages import filter_post, run_stage
from bl_data.testing import synthetic_comments, zero_size_avi

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


def _dense_keep(texts: list[str], likes: list[int], threshold: float, cap: int | None) -> list[int]:
    """The filter as it was (the whole n x n TF-IDF cosine matrix), on the `cap` most-liked comments."""
    order = sorted(range(len(texts)), key=lambda i: -likes[i])[:cap]
    similarity = comment_similarity(texts)  # IDF over every comment
    kept: list[int] = []
    for i in order:
        if all(similarity[i, j] < threshold for j in kept):
            kept.append(i)
    return sorted(kept)


@pytest.mark.parametrize(("n", "block", "cap"), [(1500, 64, None), (1500, 4096, None), (600, 16, 150)])
def test_near_duplicate_filter_in_blocks_keeps_what_the_dense_filter_kept(n, block, cap):
    """Item 2: the linear-memory filter (blocks, prefix-filtered pairs, merged chunks of kept comments, a cap)
    keeps exactly the comments the n x n version keeps, at both paper thresholds."""
    texts, likes = synthetic_comments(n, seed=n + block)
    for threshold in (0.6, 0.7):
        kept = near_duplicate_keep(texts, likes, threshold, max_candidates=cap, block=block).tolist()
        expected = _dense_keep(texts, likes, threshold, cap)
        assert kept == expected and 0 < len(kept) < (cap or n)


PREPARE = """
import json, resource, sys
from pathlib import Path
from bl_data.pipeline import PrepareConfig, prepare

if __name__ == "__main__":
    cfg = PrepareConfig(source="youtube", input=Path(sys.argv[1]), out=Path(sys.argv[2]), max_side=64)
    report = prepare(cfg)
    with open("/proc/self/status") as status:  # this image's peak (ru_maxrss would count pytest's at exec)
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the filter's child
    print(json.dumps({"written": report["media"]["written"], "peak_mb": peak, "children_mb": children}))
"""


def test_a_post_with_100k_comments_is_prepared_in_bounded_memory(tmp_path):
    """Item 2: 100k comments (the n x n filter would ask for 80 GB) are prepared in a subprocess whose peak
    RSS, and its filter child's, stay under 1 GB; the sample quotes the top comments, near duplicates out."""
    folder = synthesize_youtube(tmp_path / "dl", 1, seed=27)
    info_path = folder / "demo270000.info.json"
    info = json.loads(info_path.read_text())
    texts, likes = synthetic_comments(100_000, seed=27)
    filler = [{"text": t, "like_count": k % 10} for t, k in zip(texts, likes, strict=True)]
    top = []  # five distinct comments, each followed by a near duplicate with one like less
    for i, words in enumerate(
        [
            "alpha beta gamma delta epsilon",
            "zulu yankee xray whiskey victor",
            "mango papaya guava lychee durian",
            "granite basalt marble quartz slate",
            "violin cello oboe bassoon trumpet",
        ]
    ):
        top.append({"text": words, "like_count": 10_000 - 10 * i})
        top.append({"text": f"{words} indeed", "like_count": 9_999 - 10 * i})
    info["comments"] = top + filler
    info_path.write_text(json.dumps(info))
    out = tmp_path / "shards"
    done = subprocess.run(
        [sys.executable, "-c", PREPARE, str(folder), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["written"] == 1
    assert result["peak_mb"] < 1024 and result["children_mb"] < 1024, result
    (sample,) = open_shards(out, split_by_node=False, split_by_worker=False, decode_frames=False)
    quoted = [c["text"] for c in sample["json"]["behavior"]["top_comments"]]
    assert quoted == [c["text"] for c in top[::2]]


def test_a_number_too_large_for_a_float_fails_its_file_alone(tmp_path):
    """Item 1 ("for whatever reason"): a 400-digit `duration` raised OverflowError and ended the run."""
    folder = synthesize_youtube(tmp_path / "dl", 2, seed=28)
    info = json.loads((folder / "demo280000.info.json").read_text()) | {"id": "aaa", "duration": 10**400}
    (folder / "aaa.info.json").write_text(json.dumps(info))
    out = tmp_path / "shards"
    prepare(PrepareConfig(source="youtube", input=folder, out=out, max_side=64))
    assert done_keys(out) == {"demo280000", "demo280001"}
    (failure,) = _failures(out)
    assert (failure["sample_id"], failure["field"]) == ("aaa", "duration")
    assert failure["reason"] == "impossible value: a 401-digit number"


def test_an_unforeseen_exception_in_one_record_fails_that_record_alone(tmp_path, monkeypatch):
    """Item 1: whatever a line or file makes an importer raise is its Failure; the other posts go on."""
    from bl_data.sources import reddit, youtube

    def fragile(post_of):
        def post(record, sample_id):
            if sample_id.endswith("1"):
                raise RuntimeError(f"cannot digest {sample_id}")
            return post_of(record, sample_id)

        return post

    folder = synthesize_youtube(tmp_path / "dl", 3, seed=29)
    monkeypatch.setattr(youtube, "_post", fragile(youtube._post))
    out = tmp_path / "yt"
    prepare(PrepareConfig(source="youtube", input=folder, out=out, max_side=64))
    assert done_keys(out) == {"demo290000", "demo290002"}
    reasons = {Path(f["input"]).name: f["reason"] for f in _failures(out)}

    def expected(sample_id: str) -> str:
        where = re.escape("cannot be imported (unexpected RuntimeError at test_hostile_inputs.py:")
        return where + r"\d+" + re.escape(f": cannot digest {sample_id})")

    assert re.fullmatch(expected("demo290001"), reasons["demo290001.info.json"])
    assert reasons.keys() == {"demo290001.info.json", "demo290001.mp4"}  # its video: no post uses it

    reddit_folder = tmp_path / "reddit"
    (reddit_folder / "media").mkdir(parents=True)
    lines, comments = [], []
    for i, pid in enumerate(("p0", "p1", "p2")):
        Image.new("RGB", (40, 30), (90 * i, 90, 30)).save(reddit_folder / "media" / f"{pid}.jpg")
        lines.append(json.dumps({"id": pid, "title": f"post {pid}", "subreddit": "pics"}))
        for body in ("what a lovely quiet harbour", "the light on the water is perfect"):
            comments.append(json.dumps({"link_id": f"t3_{pid}", "body": body}))
    (reddit_folder / "RS_2020-01.ndjson").write_text("\n".join(lines) + "\n")
    (reddit_folder / "RC_2020-01.ndjson").write_text("\n".join(comments) + "\n")
    monkeypatch.setattr(reddit, "_post", fragile(reddit._post))
    out = tmp_path / "rd"
    prepare(PrepareConfig(source="reddit", input=reddit_folder, out=out, max_side=64))
    assert done_keys(out) == {"p0", "p2"}
    reasons = {f["input"]: f["reason"] for f in _failures(out) if f["stage"] == "import"}
    assert re.fullmatch(expected("p1"), reasons[f"{reddit_folder / 'RS_2020-01.ndjson'}:2"])


class _KillsItsUnpickler(str):
    """A comment that, unpickled in the filter's child process, ends that process at once (as the OOM killer)."""

    def __reduce__(self):
        return os._exit, (3,)


def test_the_filter_child_dying_fails_that_post_only():
    """Item 2: a post filtered in a child process that dies is that post's Failure; this process lives on."""
    comments = [
        Comment("a perfectly ordinary comment", 5),
        Comment(_KillsItsUnpickler("doomed words here"), 1),
    ]
    post = Post(id="big", source="youtube", media_path=Path("/data/big.mp4"), title="t", comments=comments)
    filters = Filters([NearDuplicateCommentsRule(inline_limit=1)])
    failure = filter_post(post, filters)
    assert isinstance(failure, Failure) and (failure.stage, failure.sample_id) == ("filter", "big")
    assert "the near-duplicate comment filter's process died on 2 comments" in failure.reason
    kept = filter_post(dataclasses.replace(post, comments=comments[:1] * 2), filters)  # the next post: fine
    assert isinstance(kept, Post) and len(kept.comments) == 1
