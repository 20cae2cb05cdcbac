"""`prepare` against inputs that used to stop, hang or fool it: every media file ends written, dropped by a
named rule or as a named failure, once, and the run goes on. Fixtures are built here (PyAV, PIL, os.mkfifo)."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
from pathlib import Path

import pytest
from PIL import Image

from bl_data.demo import synthesize_youtube
from bl_data.media import MediaError, analyze_media, probe
from bl_data.pipeline import FailureLog, PrepareConfig, prepare
from bl_data.records import Failure, Post
from bl_data.shards import done_keys, open_shards
from bl_data.sources._common import VIDEO_EXTENSIONS
from bl_data.stages import run_stage
from bl_data.testing import make_clip, zero_size_avi

APPS = Path(__file__).parents[3] / "apps"


def _failures(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]


def _by_input(out: Path) -> dict[str, dict]:
    return {Path(f["input"]).name: f for f in _failures(out)}


def _accounted(media: dict) -> int:
    """The sum of the report's media outcomes (each media file has exactly one)."""
    return (
        media["written"]
        + media["already_done"]
        + media["other_part"]
        + sum(media["dropped"].values())
        + sum(media["failed"].values())
    )


def _add_post(folder: Path, video_id: str, like: str, **changes: object) -> dict:
    """Write `<video_id>.info.json`: the info.json of the clip `like` with `changes`."""
    info = json.loads((folder / f"{like}.info.json").read_text()) | {"id": video_id, **changes}
    (folder / f"{video_id}.info.json").write_text(json.dumps(info))
    return info


def _unreadable(path: Path) -> Path:
    """Make `path` a regular file this process cannot open: mode 000, or (as root, who ignores modes) a
    symbolic link to a write-only sysctl, which the kernel refuses to root as well."""
    path.write_bytes(b"\x00" * 64)
    path.chmod(0)
    with contextlib.suppress(PermissionError), path.open("rb"):
        path.unlink()
        path.symlink_to("/proc/sys/vm/drop_caches")
    try:
        path.open("rb").close()
    except PermissionError:
        return path
    pytest.skip("no way to make a file unreadable to this process")


@contextlib.contextmanager
def _deadline(seconds: int):
    """Raise TimeoutError in the test when the block runs longer (interrupts a blocking open of a FIFO)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s (blocked on a named pipe?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_any_exception_is_the_posts_failure_in_workers_and_in_the_main_process(tmp_path):
    """Item 1: a 0x0 AVI makes pyscenedetect raise a bare AssertionError; the run goes on, reruns too."""
    folder = synthesize_youtube(tmp_path / "dl", 2, seed=21)
    avi = zero_size_avi(folder / "zero.avi")
    _add_post(folder, "zero", like="demo210000", duration=2.0, heatmap=None)
    with pytest.raises(Exception) as raised:  # what analysing it raises, whatever its type
        analyze_media(avi, max_side=64)
    expected = raised.value.reason if isinstance(raised.value, MediaError) else type(raised.value).__name__
    out = tmp_path / "shards"
    for workers in (2, 1):  # in worker processes, then a rerun in this process: neither dies
        report = prepare(PrepareConfig(source="youtube", input=folder, out=out, workers=workers, max_side=64))
        (failure,) = _failures(out)
        assert (failure["stage"], failure["sample_id"], failure["input"]) == ("media", "zero", str(avi))
        assert expected in failure["reason"]
        assert report["media"]["failed"] == {"media": 1} and report["folder"]["samples"] == 2
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert report["media"]["already_done"] == 2 and done_keys(out) == {"demo210000", "demo210001"}


def test_run_stage_turns_a_bare_assertion_into_a_failure_naming_where():
    def analyse() -> None:
        raise AssertionError

    post = Post(id="p1", source="youtube", media_path=Path("/data/p1.mp4"), title="t")
    failure = run_stage("media", post, analyse)
    assert isinstance(failure, Failure) and (failure.input, failure.stage, failure.sample_id) == (
        "/data/p1.mp4",
        "media",
        "p1",
    )
    assert failure.reason.startswith("unexpected AssertionError at test_prepare_bad_inputs.py:")


def test_named_pipes_are_failures_and_never_opened(tmp_path):
    """Item 2: a FIFO `X.info.json`, a FIFO media file and a FIFO comments dump would block a reader forever."""
    folder = synthesize_youtube(tmp_path / "dl", 1, seed=22)
    os.mkfifo(folder / "fifo.info.json")
    os.mkfifo(folder / "piped.mp4")
    _add_post(folder, "piped", like="demo220000")
    reddit = tmp_path / "reddit"
    (reddit / "media").mkdir(parents=True)
    Image.new("RGB", (32, 24), (9, 99, 199)).save(reddit / "media" / "p1.jpg")
    (reddit / "RS_2020-01.ndjson").write_text(
        json.dumps({"id": "p1", "title": "t", "subreddit": "pics"}) + "\n"
    )
    os.mkfifo(reddit / "RC_2020-01.ndjson")
    blift = tmp_path / "blift"
    (blift / "media").mkdir(parents=True)
    os.mkfifo(blift / "rows.parquet")
    with _deadline(120):
        report = prepare(PrepareConfig(source="youtube", input=folder, out=tmp_path / "yt", max_side=64))
        prepare(PrepareConfig(source="reddit", input=reddit, out=tmp_path / "rd", max_side=64))
        prepare(PrepareConfig(source="blift", input=blift, out=tmp_path / "bl", max_side=64))
    failures = _by_input(tmp_path / "yt")
    assert "named pipe (FIFO)" in failures["fifo.info.json"]["reason"]
    assert (
        "named pipe (FIFO)" in failures["piped.mp4"]["reason"] and failures["piped.mp4"]["stage"] == "import"
    )
    assert "no media file piped" in failures["piped.info.json"]["reason"]
    assert report["media"]["written"] == 1 and report["media"]["failed"] == {"import": 1}
    assert "named pipe (FIFO)" in _by_input(tmp_path / "rd")["RC_2020-01.ndjson"]["reason"]
    assert "named pipe (FIFO)" in _by_input(tmp_path / "bl")["rows.parquet"]["reason"]


_BODIES = [
    "this is the best thing I have seen today",
    "absolutely wonderful colours in this one",
    "my cat would love to watch this for hours",
]


def _reddit_folder(folder: Path, ids: list[str]) -> tuple[list[bytes], list[bytes]]:
    """Media (one image per id), and the submission and comment NDJSON lines of each post."""
    (folder / "media").mkdir(parents=True)
    submissions, comments = [], []
    for i, pid in enumerate(ids):
        Image.new("RGB", (40, 30), (30 * i, 200 - 30 * i, 90)).save(folder / "media" / f"{pid}.jpg")
        post = {"id": pid, "title": f"post {pid}", "subreddit": "pics", "score": 10 + i, "num_comments": 2}
        submissions.append(json.dumps(post).encode() + b"\n")
        comments += [
            json.dumps({"link_id": f"t3_{pid}", "body": body, "score": k}).encode() + b"\n"
            for k, body in enumerate(_BODIES)
        ]
    return submissions, comments


def test_truncated_gzip_dump_keeps_the_posts_before_the_break(tmp_path):
    """Item 3: a gzip dump cut off inside its second member; the first member's posts are prepared."""
    folder = tmp_path / "reddit"
    submissions, comments = _reddit_folder(folder, ["a1", "b2", "c3", "d4"])
    whole, cut = gzip.compress(b"".join(submissions[:2])), gzip.compress(b"".join(submissions[2:]))
    dump = folder / "RS_2021-05.ndjson.gz"
    dump.write_bytes(whole + cut[:12])  # the header and 2 bytes of deflate data: not a whole line
    (folder / "RC_2021-05.ndjson").write_bytes(b"".join(comments))
    with pytest.raises(EOFError):  # the fixture really is truncated
        gzip.decompress(dump.read_bytes())
    out = tmp_path / "shards"
    report = prepare(PrepareConfig(source="reddit", input=folder, out=out, max_side=64))
    assert done_keys(out) == {"a1", "b2"}
    failures = _by_input(out)
    broken = next(f for name, f in failures.items() if name.startswith(dump.name))
    line = int(broken["input"].rsplit(":", 1)[1])
    assert broken["stage"] == "import" and line == 3 and "breaks off in line 3" in broken["reason"]
    assert f"after byte {sum(map(len, submissions[:2]))} " in broken["reason"]
    assert {"c3.jpg", "d4.jpg"} <= set(failures)  # their posts were lost with the break: named, not silent
    assert report["media"]["written"] == 2 and _accounted(report["media"]) == 4


def test_every_media_file_is_written_dropped_by_a_rule_or_a_named_failure(tmp_path):
    """Item 4 (+ 6): the outcomes add up to the media files in the folder; a rerun logs nothing twice."""
    folder = synthesize_youtube(tmp_path / "dl", 3, seed=23)
    first = "demo230000"
    (folder / "orphan.mp4").write_bytes((folder / f"{first}.mp4").read_bytes())  # no info.json beside it
    _unreadable(folder / "locked.mp4")
    _add_post(folder, "locked", like=first)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    _add_post(folder, "broken", like=first)
    (folder / "copy.mp4").write_bytes((folder / f"{first}.mp4").read_bytes())
    _add_post(folder, "copy", like=first)
    make_clip(folder / "lowviews.mp4", size=(64, 48), fps=8, seconds=5.0, cuts=(2.0,), seed=5)
    _add_post(folder, "lowviews", like=first, view_count=500, like_count=5)
    (folder / f"{first}.webm").write_bytes(b"another format of the same video")
    os.mkfifo(folder / "pipe.mkv")
    inputs = sorted(p.name for p in folder.iterdir() if p.suffix[1:] in VIDEO_EXTENSIONS)
    assert len(inputs) == 10
    out = tmp_path / "shards"
    report = prepare(PrepareConfig(source="youtube", input=folder, out=out, max_side=64))
    media = report["media"]
    assert media["files"] == len(inputs) and _accounted(media) == len(inputs)
    assert media["written"] == 3
    assert media["dropped"] == {"duplicate_media": 1, "min_views": 1, "other_file_same_id": 1}
    assert media["failed"] == {"filter": 1, "import": 2, "media": 1}
    failures = _by_input(out)
    assert "no info.json with id 'orphan'" in failures["orphan.mp4"]["reason"]
    assert failures["locked.mp4"]["stage"] == "filter" and "cannot read" in failures["locked.mp4"]["reason"]
    assert failures["broken.mp4"]["stage"] == "media" and "named pipe" in failures["pipe.mkv"]["reason"]
    logged = (out / "failures.jsonl").read_text()
    again = prepare(PrepareConfig(source="youtube", input=folder, out=out, max_side=64))
    assert (out / "failures.jsonl").read_text() == logged  # item 6: each (input, stage) once
    assert json.loads((out / "report.json").read_text()) == again
    assert again["media"] | {"written": 3, "already_done": 0} == media  # the whole folder, not this run
    assert again["media"]["already_done"] == 3 and again["folder"]["samples"] == 3
    assert again["folder"]["failures_logged"] == len(_failures(out)) == 4
    keys = [(f["input"], f["stage"]) for f in _failures(out)]
    assert len(keys) == len(set(keys))


def test_an_importer_that_raises_ends_the_import_and_the_posts_read_before_go_on(tmp_path, monkeypatch):
    import bl_data.pipeline
    from bl_data.sources import read_youtube

    folder = synthesize_youtube(tmp_path / "dl", 2, seed=25)

    def breaks_after_one(cfg):
        yield next(read_youtube(cfg.input))
        raise RuntimeError("importer bug")

    monkeypatch.setattr(bl_data.pipeline, "_posts", breaks_after_one)
    out = tmp_path / "shards"
    report = prepare(PrepareConfig(source="youtube", input=folder, out=out, max_side=64))
    assert done_keys(out) == {"demo250000"}
    stopped = _by_input(out)["dl"]
    assert stopped["stage"] == "import" and "import stopped: unexpected RuntimeError at" in stopped["reason"]
    assert "importer bug" in stopped["reason"] and report["media"]["failed"] == {
        "import": 1
    }  # demo250001.mp4


def test_failure_log_drops_a_torn_line_and_keeps_one_line_per_input_and_stage(tmp_path):
    path = tmp_path / "failures.jsonl"
    path.write_text(json.dumps({"input": "a.mp4", "stage": "media", "reason": "x"}) + '\n{"input": "b.m')
    log = FailureLog(path)
    log.add(Failure("a.mp4", "media", "again"))
    log.add(Failure("a.mp4", "check", "other stage"))
    log.add(Failure("b.mp4", "media", "y"))
    log.add(Failure("b.mp4", "media", "y"))
    log.close()
    assert [(f["input"], f["stage"]) for f in _failures(tmp_path)] == [
        ("a.mp4", "media"),
        ("a.mp4", "check"),
        ("b.mp4", "media"),
    ]


def _png_named_mp4(path: Path) -> Path:
    Image.new("RGB", (48, 32), (220, 30, 30)).save(path, format="PNG")
    return path


def test_media_kind_duration_and_heatmap_are_checked_against_the_content(tmp_path):
    """Item 5: a PNG named .mp4, info.json durations beyond the tolerance, heatmap markers past the end."""
    folder = synthesize_youtube(tmp_path / "dl", 1, seed=24)
    clip = "demo240000"
    _png_named_mp4(folder / "still.mp4")
    _add_post(folder, "still", like=clip, heatmap=None, duration=None)
    for seed, name in enumerate(("near", "far", "late")):
        make_clip(folder / f"{name}.mp4", size=(64, 48), fps=8, seconds=4.0, cuts=(2.0,), seed=seed)
    length = probe(folder / "near.mp4").duration
    for name, duration in (("near", length + 1.5), ("far", length + 2.5)):  # tolerance: 2 s here
        _add_post(folder, name, like=clip, duration=duration, heatmap=None)
    markers = [{"start_time": s, "end_time": s + 2.0, "value": 0.5} for s in (0.0, 2.0, 60.0)]
    _add_post(folder, "late", like=clip, duration=4.0, heatmap=markers)
    out = tmp_path / "shards"
    prepare(PrepareConfig(source="youtube", input=folder, out=out, max_side=64, duration_tolerance_ratio=0.0))
    failures = _by_input(out)
    assert (failures["still.mp4"]["stage"], failures["still.mp4"]["field"]) == ("check", "media")
    assert "still image, not a video" in failures["still.mp4"]["reason"]
    assert (failures["far.mp4"]["field"], failures["late.mp4"]["field"]) == (
        "duration",
        "heatmap[2].end_time",
    )
    assert f"differs from the media's {length:.2f} s" in failures["far.mp4"]["reason"]
    assert done_keys(out) == {clip, "near"}


def test_png_named_mp4_on_reddit_is_verbalised_as_an_image_and_the_repair_recorded(tmp_path):
    folder = tmp_path / "reddit"
    submissions, comments = _reddit_folder(folder, ["pic1"])
    (folder / "media" / "pic1.jpg").unlink()
    _png_named_mp4(folder / "media" / "pic1.mp4")
    (folder / "RS_2022-01.ndjson").write_bytes(b"".join(submissions))
    (folder / "RC_2022-01.ndjson").write_bytes(b"".join(comments))
    prepare(PrepareConfig(source="reddit", input=folder, out=tmp_path / "shards", max_side=64))
    (sample,) = open_shards(tmp_path / "shards", split_by_node=False, split_by_worker=False)
    meta = sample["json"]
    human, gpt = meta["conversations"][0]["value"], meta["conversations"][1]["value"]
    assert human.endswith("<image>") and "video" not in human + gpt
    assert meta["provenance"]["media_kind"] == "still image from the content (file named .mp4)"
    assert sample["frames"].shape == (1, 32, 48, 3)


@pytest.mark.parametrize("value", ["0", "-2"])
def test_workers_below_one_is_a_usage_error(tmp_path, value, capsys):
    """Item 7: argparse rejects it (exit status 2) before anything runs; the config rejects it too."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("apps_prepare", str(APPS / "prepare"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("apps_prepare", loader))
    loader.exec_module(module)
    argv = ["--source", "youtube", "--input", str(tmp_path), "--out", str(tmp_path / "o"), "--workers", value]
    assert module.run(module.main, "apps/prepare", argv) == 2
    assert f"--workers: must be >= 1, got {value}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="workers must be >= 1"):
        PrepareConfig(source="youtube", input=tmp_path, out=tmp_path / "o", workers=int(value))


class _KillsItsUnpickler(str):
    """A title that, unpickled in a worker process, ends that process at once (as a native crash would)."""

    def __reduce__(self):
        return os._exit, (3,)


def test_a_worker_that_dies_fails_only_its_post_and_the_others_are_retried(tmp_path):
    """Item 1, beyond exceptions: a dead worker process used to hang the pool forever."""
    from bl_data.pool import DIED, process_posts
    from bl_data.stages import StageConfig

    make_clip(tmp_path / "a.mp4", size=(64, 48), fps=8, seconds=3.0, cuts=(1.0,), seed=1)
    make_clip(tmp_path / "b.mp4", size=(64, 48), fps=8, seconds=3.0, cuts=(2.0,), seed=2)

    def post(pid: str, media: str, title: str = "an ad") -> Post:
        return Post(
            id=pid, source="youtube", media_path=tmp_path / media, title=title, view_count=9, like_count=1
        )

    posts = [post("a", "a.mp4"), post("dies", "a.mp4", _KillsItsUnpickler("x")), post("b", "b.mp4")]
    with _deadline(300):
        results = list(process_posts(posts, StageConfig(max_side=32), workers=2))
    assert [r.post_id for r in results] == ["a", "dies", "b"]
    assert results[1].failure == Failure(str(tmp_path / "a.mp4"), "media", DIED, "dies")
    assert results[0].meta is not None and results[2].meta is not None
    assert [len(r.frames) for r in (results[0], results[2])] == [3, 3]
