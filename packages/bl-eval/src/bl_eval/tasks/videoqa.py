"""Open-ended video QA (MSVD-QA, MSRVTT-QA, ActivityNet-QA): exact-match accuracy of a generated short answer.

The paper reports the Video-ChatGPT GPT-assisted accuracy and score. That judge calls a hosted model, so it
is a plug-in here: any object satisfying `Judge` (its name and version go into the results), applied to the
generated answers by `judged_metrics`. No judge is built in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from ..spec import Example, TaskSpec
from ._common import VIDEO_EXTS, MediaIndex, first_existing, read_json, read_text

_INSTRUCTION = "Answer the question using a single word or phrase."


class Judge(Protocol):
    """A GPT-style QA judge: is the prediction right, and a 0-5 score (Video-ChatGPT's rubric)."""

    name: str
    version: str

    def __call__(self, question: str, answer: str, prediction: str) -> tuple[bool, float]: ...


def judged_metrics(
    judge: Judge, questions: Sequence[str], answers: Sequence[str], predictions: Sequence[str | None]
) -> dict[str, float | str]:
    """Judge-based accuracy (%) and mean score, with the judge's name and version recorded."""
    verdicts = [judge(q, a, p or "") for q, a, p in zip(questions, answers, predictions, strict=True)]
    return {
        "judge": judge.name,
        "judge_version": judge.version,
        "accuracy": 100.0 * sum(ok for ok, _ in verdicts) / len(verdicts),
        "score": sum(score for _, score in verdicts) / len(verdicts),
        "n": len(verdicts),
    }


def _example(qid: str, question: str, answer: str, video: Path) -> Example:
    return Example(
        id=qid,
        prompt=f"<video>\n{question}\n{_INSTRUCTION}",
        target=str(answer),
        media=[video],
        meta={"question": question},
    )


def _msvd(root: Path) -> Iterator[Example]:
    """test_qa.json rows {question, answer, id, video_name | video_id}; a numeric video_id is mapped to
    the clip name through youtube_mapping.txt ("<clip> vid<id>" per line)."""
    videos = MediaIndex(root / "videos", VIDEO_EXTS, ".avi")
    mapping: dict[str, str] = {}
    if (root / "youtube_mapping.txt").exists():
        for line in read_text(root / "youtube_mapping.txt").splitlines():
            if len(parts := line.split()) == 2:
                mapping[parts[1].removeprefix("vid")] = parts[0]
    for i, item in enumerate(read_json(first_existing(root, "test_qa.json"))):
        name = item.get("video_name") or mapping.get(str(item["video_id"]), f"vid{item['video_id']}")
        yield _example(
            str(item.get("question_id", item.get("id", i))),
            item["question"],
            item["answer"],
            videos.find(name),
        )


def _msrvtt(root: Path) -> Iterator[Example]:
    """test_qa.json rows {question, answer, id, video_name | video_id}; video_id 7010 -> videos/video7010.mp4."""
    videos = MediaIndex(root / "videos", VIDEO_EXTS, ".mp4")
    for i, item in enumerate(read_json(first_existing(root, "test_qa.json"))):
        name = item.get("video_name") or str(item["video_id"])
        name = name if name.startswith("video") else f"video{name}"
        yield _example(
            str(item.get("question_id", item.get("id", i))),
            item["question"],
            item["answer"],
            videos.find(name),
        )


def _activitynet(root: Path) -> Iterator[Example]:
    """test_q.json [{video_name, question, question_id}] + test_a.json [{answer, type, question_id}];
    video "abc" -> videos/v_abc.mp4 (or videos/abc.*)."""
    videos = MediaIndex(root / "videos", VIDEO_EXTS, ".mp4")
    answers = {a["question_id"]: a["answer"] for a in read_json(first_existing(root, "test_a.json"))}
    for item in read_json(first_existing(root, "test_q.json")):
        name = item["video_name"]
        video = videos.find(f"v_{name}", name) if not name.startswith("v_") else videos.find(name)
        yield _example(item["question_id"], item["question"], answers[item["question_id"]], video)


def _spec(name: str, loader: Callable[[Path], Iterator[Example]], layout: str, notes: str = "") -> TaskSpec:
    return TaskSpec(
        name=name,
        group="video_qa",
        protocol="generate",
        metric="exact_match",
        loader=loader,
        layout=layout,
        subdir=name,
        parser="text",
        max_new_tokens=16,
        paper_metric_key="accuracy",
        notes=(
            "Exact match of the normalised answer; the paper's numbers are GPT-judged (Video-ChatGPT "
            "protocol; see bl_eval.tasks.videoqa.Judge). " + notes
        ).strip(),
    )


SPECS = [
    _spec(
        "msvd_qa",
        _msvd,
        "test_qa.json ([{question, answer, id, video_name|video_id}]) + videos/<clip>.avi (YouTubeClips) "
        "[+ youtube_mapping.txt ('<clip> vid<N>') when rows carry a numeric video_id]",
    ),
    _spec(
        "msrvtt_qa",
        _msrvtt,
        "test_qa.json ([{question, answer, id, video_name|video_id}]) + videos/video<N>.mp4",
    ),
    _spec(
        "activitynet_qa",
        _activitynet,
        "test_q.json ([{video_name, question, question_id}]) + test_a.json ([{answer, type, question_id}]) + "
        "videos/v_<video_name>.mp4 (or videos/<video_name>.*)",
    ),
]
