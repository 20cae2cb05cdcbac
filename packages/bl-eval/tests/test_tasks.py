"""Every task's loader on a tiny fixture written in its benchmark's published layout."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bl_data.records import Comment, Post, SceneDescription
from bl_data.shards import ShardWriter
from bl_data.verbalize import verbalize
from bl_eval.metrics import METRICS
from bl_eval.parsers import PARSERS
from bl_eval.reference import reference_settings
from bl_eval.spec import Example, TaskSpec
from bl_eval.tasks import TASKS
from bl_eval.tasks.behavior import shard_frames
from bl_eval.tasks.videoqa import judged_metrics


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    return touch(path, text.encode(encoding))


def dump(path: Path, obj: Any) -> Path:
    return write(path, json.dumps(obj))


def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (200, 30, 30)).save(path)
    return path


def load(name: str, root: Path, limit: int | None = None) -> list[Example]:
    return TASKS[name].load(root, limit)


# ---- fixtures in each benchmark's layout ------------------------------------------------------------------
VE8 = ["Anger", "Anticipation", "Disgust", "Fear", "Joy", "Sadness", "Surprise", "Trust"]
CAER = ["Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
MIKELS = ["amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness"]


def emotion_fixtures(root: Path) -> None:
    for c in VE8:
        touch(root / "videoemotion8" / c / "clip1.mp4")
    write(root / "videoemotion8" / "README.txt", "not a video")
    for c in CAER:
        touch(root / "caer" / "test" / c / "0001.avi")
        touch(root / "caer" / "train" / c / "0002.avi")
    for c in ["anger", "disgust", "fear", "joy", "sadness", "surprise"]:
        touch(root / "ekman6" / c / "a.mp4")
    for c in MIKELS:
        touch(root / "iapsa8" / c / "img.jpg")
    write(
        root / "abstract" / "ABSTRACT_groundTruth.csv",
        "'','Amusement','Anger','Awe','Content','Disgust','Excitement','Fear','Sad'\n"
        "'1.jpg',0,0,0,5,1,0,0,0\n'2.jpg',0,0,0,0,0,0,0,3\n'3.jpg',2,2,0,0,0,0,0,0\n",
    )
    for name in ["1.jpg", "2.jpg", "3.jpg"]:
        image(root / "abstract" / "images" / name)
    write(
        root / "emotion6" / "ground_truth.txt",
        "[image_filename]\t[valence]\t[arousal]\t[prob. anger]\t[prob. disgust]\t[prob. fear]\t[prob. joy]\t"
        "[prob. sadness]\t[prob. surprise]\t[prob. neutral]\n"
        "anger/1.jpg\t3.1\t5.2\t0.6\t0.1\t0.1\t0\t0.1\t0.1\t0\njoy/2.jpg\t7.0\t5.0\t0\t0\t0\t0.9\t0\t0.1\t0\n",
    )
    rows = []
    for label in ["amusement", "fear"]:
        rel = f"image/{label}/{label}_00001.jpg"
        image(root / "emoset" / rel)
        dump(root / "emoset" / f"annotation/{label}/{label}_00001.json", {"emotion": label})
        rows.append([label, rel, f"annotation/{label}/{label}_00001.json"])
    dump(root / "emoset" / "test.json", rows)


def memorability_fixtures(root: Path) -> None:
    write(root / "lamem" / "splits" / "test_1.txt", "a.jpg 0.75\nb.jpg 0.5\n")
    write(
        root / "memcat" / "data" / "memcat_image_data.csv",
        "image_file,category,subcategory,memorability_w_fa_correction\nx.jpg,animal,cat,0.81\n",
    )
    touch(root / "memcat" / "images" / "animal" / "cat" / "x.jpg")
    write(root / "sun" / "scores.csv", "image,score\nsun_a.jpg,0.62\n")
    touch(root / "sun" / "images" / "sun_a.jpg")
    dump(
        root / "memento10k" / "memento_val_data.json",
        [{"filename": "v1.mp4", "mem_score": 0.9, "alpha": -0.1}],
    )
    touch(root / "memento10k" / "videos" / "v1.mp4")
    write(
        root / "videomem" / "ground-truth_dev-set.csv",
        "video,short-term_memorability,nb_short-term_annotations,long-term_memorability,nb_long-term_annotations\n"
        "video1.webm,0.924,34,0.846,13\n",
    )
    touch(root / "videomem" / "sources" / "video1.webm")
    write(
        root / "mediaeval" / "scores.csv",
        "video_id,scores_raw_short_term,scores_normalized_short_term\n7,0.8,0.85\n",
    )
    touch(root / "mediaeval" / "videos" / "7.mp4")
    dump(
        root / "lambda" / "bs_test_a.json",
        [
            {
                "id": "ad1",
                "video": "ad1.mp4",
                "conversations": [
                    {"from": "human", "value": "How memorable is it?"},
                    {"from": "gpt", "value": "57"},
                ],
            }
        ],
    )
    touch(root / "lambda" / "videos" / "ad1.mp4")


def videoqa_fixtures(root: Path) -> None:
    dump(
        root / "msvd_qa" / "test_qa.json",
        [
            {"answer": "cat", "id": 0, "question": "what is playing?", "video_id": 1},
            {"answer": "dog", "id": 1, "question": "what runs?", "video_name": "xyz_2_8"},
        ],
    )
    write(root / "msvd_qa" / "youtube_mapping.txt", "abc_1_5 vid1\nxyz_2_8 vid2\n")
    touch(root / "msvd_qa" / "videos" / "abc_1_5.avi")
    touch(root / "msvd_qa" / "videos" / "xyz_2_8.avi")
    dump(
        root / "msrvtt_qa" / "test_qa.json",
        [{"answer": "dog", "id": 5, "question": "what is it?", "video_id": 7010}],
    )
    touch(root / "msrvtt_qa" / "videos" / "video7010.mp4")
    dump(
        root / "activitynet_qa" / "test_q.json",
        [{"video_name": "abc", "question": "is it day?", "question_id": "v_abc_1"}],
    )
    dump(root / "activitynet_qa" / "test_a.json", [{"answer": "yes", "type": 3, "question_id": "v_abc_1"}])
    touch(root / "activitynet_qa" / "videos" / "v_abc.mp4")


LVU_CLASSES = ["scene", "way_speaking", "relationship", "director", "genre", "writer", "year"]


def lvu_fixtures(root: Path) -> None:
    base = root / "lvu" / "lvu_1.0"
    for task in LVU_CLASSES:
        write(
            base / task / "test.csv",
            f"{task} youtube_id imdb_id\n0 friends yt_a tt1\n2 husband_wife yt_b tt2\n",
        )
        write(base / task / "train.csv", f"{task} youtube_id imdb_id\n1 boyfriend_girlfriend yt_c tt3\n")
    write(base / "like_ratio" / "test.csv", "like dislike youtube_id imdb_id\n90 10 yt_a tt1\n")
    write(base / "view_count" / "test.csv", "view_count youtube_id imdb_id\n1000 yt_a tt1\n")
    touch(root / "lvu" / "videos" / "yt_a.mp4")


HVU_TAGS = {  # video -> its tags; each video lacks whole categories (yt1: event, concept; yt2: scene, ...)
    "yt1": ["beach", "ball", "dog", "playing_soccer", "red"],
    "yt2": ["dog", "party", "fun"],
    "yt3": ["kitchen", "cup", "cooking", "fun"],
}


def hvu_fixtures(root: Path) -> None:
    base = root / "hvu"
    write(
        base / "HVU_Tags_Categories_V1.0.csv",
        "Tag,Category\nbeach,scene\nkitchen,scene\nball,object\ndog,object\ncup,object\n"
        "playing_soccer,action\ncooking,action\nparty,event\nred,attribute\nfun,concept\n",
    )
    rows = "".join(f"{'|'.join(tags)},{video},10,20\n" for video, tags in HVU_TAGS.items())
    write(base / "HVU_Val_V1.0.csv", "Tags,youtube_id,time_start,time_end\n" + rows)
    touch(base / "videos" / "yt1_000010_000020.mp4")


def _ads_list(path: Path, rows: list[tuple[str, str]], encoding: str, sep: str) -> None:
    lines = [f'{i}{sep} "{desc}" (ABBREVIATION: "{abbr}")' for i, (desc, abbr) in enumerate(rows, 1)]
    write(path, "\n".join(lines) + "\n", encoding)


def ads_fixtures(root: Path) -> None:
    video = root / "pitt_ads" / "annotations_videos" / "video"
    _ads_list(
        video / "Topics_List.txt",
        [("Restaurants, cafe, fast food", "restaurant"), ("Cars", "cars")],
        "utf-16",
        "",
    )
    _ads_list(
        video / "Sentiments_List.txt",
        [
            ("Active\xa0(energetic, adventurous)", "active"),
            ("Cheerful (delighted, happy)", "cheerful"),
            ("Calm", "calm"),
        ],
        "latin-1",
        ".",
    )
    dump(video / "cleaned_result" / "video_Topics_clean.json", {"vidA": 1, "vidB": "2"})
    dump(video / "cleaned_result" / "video_Sentiments_clean.json", {"vidA": 1, "vidB": 2})
    dump(
        video / "raw_result" / "video_Sentiments_raw.json",
        {"vidA": ["active", "cheerful", "so much fun"], "vidB": ["2"]},
    )
    for kind in ("Action", "Reason"):
        dump(
            video / "raw_result" / f"video_QA_{kind}_raw.json",
            {f"vid{v}": [f"{kind} statement {v}.{k}" for k in range(5)] for v in range(7)},
        )
    touch(root / "pitt_ads" / "videos" / "vidA.mp4")
    dump(root / "persuasion" / "annotations.json", {"p1": ["Social_Proof", "Emotion"], "p2": "Scarcity"})
    touch(root / "persuasion" / "videos" / "p1.mp4")


def _shot2story(i: int) -> dict[str, Any]:
    return {
        "video": f"s{i}.mp4",
        "image_id": f"s{i}.mp4",
        "id": i,
        "whole_caption": f"A  summary of video {i}.",
        "whole_ASR": f"hello from video {i}",
        "video_names": [f"s{i}_0.mp4", f"s{i}_1.mp4"],
        "audio_captions": [f"A man says hello {i}.", "Music plays."],
        "captions": ["a man", "a street"],
        "ASR": [f"hello from video {i}", ""],
    }


def audio_fixtures(root: Path) -> None:
    dump(root / "shot2story" / "20k_test.json", [_shot2story(i) for i in range(5)])
    dump(root / "shot2story" / "20k_train.json", [_shot2story(i) for i in range(100, 104)])
    for i in [*range(5), *range(100, 104)]:
        touch(root / "shot2story" / "videos" / f"s{i}.mp4")


def text_fixtures(root: Path) -> None:
    write(root / "imdb" / "test" / "pos" / "0_9.txt", "Great film.<br /><br />Loved it.")
    write(root / "imdb" / "test" / "neg" / "1_2.txt", "Dull and long.")
    write(root / "imdb" / "train" / "pos" / "5_10.txt", "A delight.")
    write(root / "imdb" / "train" / "neg" / "6_1.txt", "Awful.")


QVH_LINES = [
    {
        "qid": 1,
        "query": "A man walks a dog.",
        "duration": 150,
        "vid": "RoripwjYFp8_360.0_510.0",
        "relevant_windows": [[10, 20]],
        "relevant_clip_ids": [5, 6, 7, 8, 9],
        "saliency_scores": [[4, 4, 2], [3, 4, 2], [2, 2, 3], [2, 2, 2], [0, 1, 3]],
    },
    {
        "qid": 2,
        "query": "Sunset.",
        "duration": 150,
        "vid": "missingvid_0.0_150.0",
        "relevant_windows": [[0, 4], [30, 34]],
        "relevant_clip_ids": [0, 1, 15, 16],
        "saliency_scores": [[1, 1, 1]] * 4,
    },
]


def qvh_fixtures(root: Path) -> None:
    write(
        root / "qvhighlights" / "highlight_val_release.jsonl",
        "".join(json.dumps(x) + "\n" for x in QVH_LINES),
    )
    touch(root / "qvhighlights" / "videos" / "RoripwjYFp8_360.0_510.0.mp4")


def behavior_fixtures(root: Path) -> None:
    scene = SceneDescription("a dog on a beach", ("black",), ("white",), "neutral")
    youtube = Post(
        id="yt1",
        source="youtube",
        media_path=None,
        title="An ad",
        channel="Brand",
        view_count=1000,
        like_count=20,
        comments=[Comment("What a great ad this is", 9), Comment("Loved every second of it", 3)],
    )
    reddit = Post(
        id="rd1",
        source="reddit",
        media_path=None,
        title="A pic",
        subreddit="pics",
        score=12,
        is_video=False,
        comments=[Comment("Nice shot of the coast", 4), Comment("Where is this place", 2)],
    )
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with ShardWriter(root / "blift_heldout", samples_per_shard=1) as writer:
        writer.write("yt1", verbalize(youtube, [scene, scene], replay=[0.06, 0.23]).to_json(), frames)
        writer.write("rd1", verbalize(reddit, [scene]).to_json(), frames[:1])


FIXTURES: dict[str, Callable[[Path], None]] = {}
for module_tasks, builder in [
    (["videoemotion8", "caer", "ekman6", "iapsa8", "abstract", "emotion6", "emoset"], emotion_fixtures),
    (["lamem", "memcat", "sun", "memento10k", "videomem", "mediaeval", "lambda"], memorability_fixtures),
    (["msvd_qa", "msrvtt_qa", "activitynet_qa"], videoqa_fixtures),
    ([f"lvu_{t}" for t in [*LVU_CLASSES, "like_ratio", "view_count"]], lvu_fixtures),
    (
        [f"hvu_{c}" for c in ["scene", "object", "action", "event", "attribute", "concept", "overall"]],
        hvu_fixtures,
    ),
    (
        [
            "ads_topic",
            "ads_sentiment_clubbed",
            "ads_sentiment_all",
            "ads_persuasion",
            "ads_action",
            "ads_reason",
        ],
        ads_fixtures,
    ),
    (["shot2story_audio", "shot2story_summary"], audio_fixtures),
    (["imdb", "imdb_1shot"], text_fixtures),
    (["qvhighlights_mr", "qvhighlights_hd"], qvh_fixtures),
    (["blift_likes_r2", "blift_comment_ppl", "blift_replay_rmse", "blift_replay_acc5"], behavior_fixtures),
]:
    FIXTURES |= dict.fromkeys(module_tasks, builder)


# ---- the registry ---------------------------------------------------------------------------------------------
def test_registry_covers_every_paper_task():
    assert set(TASKS) == set(FIXTURES)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_spec_is_complete(name):
    spec: TaskSpec = TASKS[name]
    assert spec.name == name and spec.group and spec.subdir and callable(spec.loader)
    assert len(spec.layout) > 20
    assert spec.metric in METRICS
    assert spec.protocol in {"logprob", "generate", "retrieval", "kshot", "nll"}
    if spec.protocol in ("generate", "kshot"):
        assert spec.parser in PARSERS
    assert (spec.shots > 0) == (spec.protocol == "kshot")
    assert spec.paper_metric_key
    settings = reference_settings(name)
    if settings:  # the paper's headline metric is the one the spec reports under
        assert next(iter(settings)) == spec.paper_metric_key


@pytest.mark.parametrize("name", sorted(TASKS))
def test_loader_on_fixture(name, tmp_path):
    FIXTURES[name](tmp_path)
    spec = TASKS[name]
    examples = spec.load(tmp_path)
    assert examples, name
    assert len({e.id for e in examples}) == len(examples)
    for example in examples:
        placeholders = example.prompt.count("<video>") + example.prompt.count("<image>")
        assert placeholders == len(example.media) or (name.startswith("blift") and not example.media)
        if spec.protocol == "logprob":
            assert example.choices and len(set(example.choices)) == len(example.choices)
            labels = example.target if isinstance(example.target, list) else [example.target]
            if isinstance(example.target, dict):
                labels = example.target["labels"]
            assert set(labels) <= set(example.choices)
        if spec.protocol == "retrieval":
            assert len(example.choices) == 30 and len(set(example.choices)) == 30
            assert 0 <= example.target < 30
        if spec.protocol == "kshot":
            assert len(example.shots) >= spec.shots
    assert spec.load(tmp_path, limit=1) == examples[:1]
    # the metric accepts the targets themselves as predictions and reports the paper's column
    perfect = [_perfect(spec, e) for e in examples]
    assert spec.paper_metric_key in METRICS[spec.metric](perfect, [e.target for e in examples])


def _perfect(spec: TaskSpec, example: Example) -> Any:
    if spec.metric == "perplexity":
        return {"nll": 1.0, "tokens": 2}
    if spec.metric == "replay":
        return {"values": [[i, v] for i, v in enumerate(example.target, 1)], "repeated": []}
    if spec.metric == "mean_average_precision":
        return dict.fromkeys(example.target, 1.0)
    if spec.metric == "grouped_mean_average_precision":
        return dict.fromkeys(example.target["labels"], 1.0)
    if spec.metric == "moment_retrieval":
        return [[*w, 1.0] for w in example.target["relevant_windows"]]
    if spec.metric == "highlight_detection":
        return [[2 * c, 2 * c + 2, 1.0] for c in example.target["relevant_clip_ids"]]
    if isinstance(example.target, list) and spec.metric == "accuracy":
        return example.target[0]
    return example.target


def test_missing_data_names_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        TASKS["caer"].load(tmp_path)


# ---- per benchmark ------------------------------------------------------------------------------------------
def test_emotion_loaders(tmp_path):
    emotion_fixtures(tmp_path)
    ve8 = load("videoemotion8", tmp_path)
    assert [e.target for e in ve8] == [c.lower() for c in VE8]
    assert ve8[0].choices == [c.lower() for c in VE8]
    assert ve8[0].prompt.startswith("<video>\n") and "anticipation, disgust" in ve8[0].prompt
    caer = load("caer", tmp_path)
    assert len(caer) == 7 and caer[0].id == "Anger/0001.avi" and caer[0].media[0].parent.parent.name == "test"
    abstract = load("abstract", tmp_path)
    assert [(e.id, e.target) for e in abstract] == [("1.jpg", "contentment"), ("2.jpg", "sadness")]
    assert all(e.media[0].exists() for e in abstract)
    assert [e.target for e in load("emotion6", tmp_path)] == ["anger", "joy"]
    emoset = load("emoset", tmp_path)
    assert [e.target for e in emoset] == ["amusement", "fear"]
    assert Image.open(emoset[0].media[0]).size == (4, 4)
    assert emoset[0].prompt.startswith("<image>\n")


def test_memorability_loaders(tmp_path):
    memorability_fixtures(tmp_path)
    assert [(e.id, e.target) for e in load("lamem", tmp_path)] == [("a.jpg", 0.75), ("b.jpg", 0.5)]
    memcat = load("memcat", tmp_path)
    assert memcat[0].media[0] == tmp_path / "memcat" / "images" / "animal" / "cat" / "x.jpg"
    assert memcat[0].target == 0.81
    assert load("memento10k", tmp_path)[0].media[0].exists()
    assert load("videomem", tmp_path)[0].media[0] == tmp_path / "videomem" / "sources" / "video1.webm"
    assert load("mediaeval", tmp_path)[0].target == 0.85
    lam = load("lambda", tmp_path)[0]
    assert lam.target == pytest.approx(0.57) and lam.prompt.startswith("<video>\n")
    assert TASKS["lamem"].parser == "memorability"


class FakeJudge:
    name, version = "fake-judge", "1"

    def __call__(self, question: str, answer: str, prediction: str) -> tuple[bool, float]:
        return prediction == answer, 5.0 if prediction == answer else 1.0


def test_videoqa_loaders_and_judge(tmp_path):
    videoqa_fixtures(tmp_path)
    msvd = load("msvd_qa", tmp_path)
    assert [e.media[0].name for e in msvd] == ["abc_1_5.avi", "xyz_2_8.avi"]
    assert msvd[0].prompt == "<video>\nwhat is playing?\nAnswer the question using a single word or phrase."
    assert load("msrvtt_qa", tmp_path)[0].media[0].name == "video7010.mp4"
    anet = load("activitynet_qa", tmp_path)[0]
    assert (anet.id, anet.target, anet.media[0].name) == ("v_abc_1", "yes", "v_abc.mp4")
    out = judged_metrics(FakeJudge(), ["q1", "q2"], ["cat", "dog"], ["cat", None])
    assert out == {"judge": "fake-judge", "judge_version": "1", "accuracy": 50.0, "score": 3.0, "n": 2}


def test_lvu_loaders(tmp_path):
    lvu_fixtures(tmp_path)
    rel = load("lvu_relationship", tmp_path)
    assert rel[0].choices == ["friends", "boyfriend girlfriend", "husband wife"]  # train.csv adds class 1
    assert [e.target for e in rel] == ["friends", "husband wife"]
    assert (
        rel[0].media[0].exists() and not rel[1].media[0].exists()
    )  # a missing video keeps its expected path
    assert rel[1].media[0] == tmp_path / "lvu" / "videos" / "yt_b.mp4"
    assert load("lvu_like_ratio", tmp_path)[0].target == pytest.approx(9.0)
    assert load("lvu_view_count", tmp_path)[0].target == pytest.approx(math.log(1000))
    assert not TASKS["lvu_view_count"].higher_is_better


def test_hvu_loaders(tmp_path):
    hvu_fixtures(tmp_path)
    objects = load("hvu_object", tmp_path)
    assert [e.target for e in objects] == [["ball", "dog"], ["dog"], ["cup"]]
    assert objects[0].choices == ["ball", "dog", "cup"]
    assert objects[0].media[0].name == "yt1_000010_000020.mp4"
    # a category's examples are the videos with a tag of it (MMAction2's HVU protocol)
    assert [e.id for e in load("hvu_scene", tmp_path)] == ["yt1_000010_000020", "yt3_000010_000020"]
    assert [e.id for e in load("hvu_event", tmp_path)] == ["yt2_000010_000020"]
    assert load("hvu_action", tmp_path)[0].target == ["playing soccer"]
    overall = load("hvu_overall", tmp_path)
    assert len(overall) == sum(len(load(f"hvu_{c}", tmp_path)) for c in HVU_CATEGORIES) == 11
    assert overall[0].target == {"group": "scene", "labels": ["beach"]}
    assert TASKS["hvu_overall"].metric in {"grouped_mean_average_precision"}


HVU_CATEGORIES = ("scene", "object", "action", "event", "attribute", "concept")
HVU_SCORES = {  # (video, category) -> the model's tag scores; only pairs where the video has a tag of it
    ("yt1", "scene"): {"beach": 0.6, "kitchen": 0.5},
    ("yt3", "scene"): {"beach": 0.2, "kitchen": 0.4},
    ("yt1", "object"): {"ball": 0.9, "dog": 0.3, "cup": 0.1},
    ("yt2", "object"): {"ball": 0.8, "dog": 0.7, "cup": 0.2},
    ("yt3", "object"): {"ball": 0.1, "dog": 0.6, "cup": 0.5},
    ("yt1", "action"): {"playing soccer": 0.3, "cooking": 0.6},
    ("yt3", "action"): {"playing soccer": 0.4, "cooking": 0.2},
    ("yt2", "event"): {"party": 0.1},
    ("yt1", "attribute"): {"red": 0.2},
    ("yt2", "concept"): {"fun": 0.3},
    ("yt3", "concept"): {"fun": 0.9},
}
HVU_MAP = {  # by hand, each category over its own videos only
    "scene": 100 * (1 + 1 / 2) / 2,  # beach: yt1(+) > yt3 -> 1; kitchen: yt1 > yt3(+) -> 1/2
    "object": 100
    * (1 + 5 / 6 + 1)
    / 3,  # ball: yt1(+) first -> 1; dog: yt2(+), yt3, yt1(+) -> (1 + 2/3)/2; cup 1
    "action": 100 * (1 / 2 + 1 / 2) / 2,  # playing soccer: yt3 > yt1(+); cooking: yt1 > yt3(+)
    "event": 100.0,  # one video, a positive (all videos scored: yt1 and yt3 would be negatives)
    "attribute": 100.0,
    "concept": 100.0,
}


def test_hvu_map_follows_mmaction2_per_category_protocol(tmp_path):
    hvu_fixtures(tmp_path)
    for category in HVU_CATEGORIES:
        examples = load(f"hvu_{category}", tmp_path)
        scores = [HVU_SCORES[(e.id[:3], category)] for e in examples]
        out = METRICS[TASKS[f"hvu_{category}"].metric](scores, [e.target for e in examples])
        assert out["map"] == pytest.approx(HVU_MAP[category]), category
    overall = load("hvu_overall", tmp_path)
    scores = [HVU_SCORES[(e.id[:3], e.target["group"])] for e in overall]
    out = METRICS["grouped_mean_average_precision"](scores, [e.target for e in overall])
    for category in HVU_CATEGORIES:
        assert out[f"map_{category}"] == pytest.approx(HVU_MAP[category])
    assert out["map"] == pytest.approx(sum(HVU_MAP.values()) / 6)


def test_ads_loaders(tmp_path):
    ads_fixtures(tmp_path)
    topic = load("ads_topic", tmp_path)
    assert [e.target for e in topic] == ["restaurant", "cars"] and topic[0].choices == ["restaurant", "cars"]
    assert [e.target for e in load("ads_sentiment_clubbed", tmp_path)] == ["active", "cheerful"]
    assert [e.target for e in load("ads_sentiment_all", tmp_path)] == [["active", "cheerful"], ["cheerful"]]
    persuasion = load("ads_persuasion", tmp_path)
    assert persuasion[0].choices == ["Emotion", "Scarcity", "Social Proof"]
    assert persuasion[0].target == ["Emotion", "Social Proof"]
    action = load("ads_action", tmp_path)
    assert len(action) == 7
    for e in action:
        assert e.choices[e.target] == f"Action statement {e.id[3:]}.0"
        assert not any(
            c.startswith(f"Action statement {e.id[3:]}.") for i, c in enumerate(e.choices) if i != e.target
        )
    assert [e.choices for e in load("ads_action", tmp_path)] == [e.choices for e in action]  # seeded
    assert len({e.target for e in action}) > 1  # the truth is not always in the same slot


def test_shot2story_loaders(tmp_path):
    audio_fixtures(tmp_path)
    audio = load("shot2story_audio", tmp_path)
    assert len(audio) == 5 and len(audio[0].shots) == 3
    prompt, answer, media = audio[0].shots[0]
    assert prompt.startswith("<video>\n") and "hello from video 100" in prompt
    assert answer == "A man says hello 100. Music plays." and media[0].name == "s100.mp4"
    assert audio[0].target == "A man says hello 0. Music plays."
    (tmp_path / "shot2story" / "20k_train.json").unlink()
    assert [e.id for e in load("shot2story_audio", tmp_path)] == ["3", "4"]  # shots from the test file
    assert load("shot2story_summary", tmp_path)[0].target == "A summary of video 0."


def test_imdb_loaders(tmp_path):
    text_fixtures(tmp_path)
    zero = load("imdb", tmp_path)
    assert [(e.id, e.target) for e in zero] == [("pos/0_9", "positive"), ("neg/1_2", "negative")]
    assert zero[0].media == [] and "Great film. Loved it." in zero[0].prompt
    one = load("imdb_1shot", tmp_path)
    assert one[0].shots[0][1] in {"positive", "negative"} and one[0].shots[0][2] == []
    assert [e.shots for e in load("imdb_1shot", tmp_path)] == [e.shots for e in one]


def test_qvhighlights_loaders(tmp_path):
    qvh_fixtures(tmp_path)
    moments = load("qvhighlights_mr", tmp_path)
    assert moments[0].media[0].name == "RoripwjYFp8_360.0_510.0.mp4" and moments[0].media[0].exists()
    assert moments[1].media[0] == tmp_path / "qvhighlights" / "videos" / "missingvid_0.0_150.0.mp4"
    assert moments[0].target == {"relevant_windows": [[10, 20]]}
    assert "150 seconds" in moments[0].prompt and "A man walks a dog." in moments[0].prompt
    highlights = load("qvhighlights_hd", tmp_path)
    assert highlights[0].target["relevant_clip_ids"] == [5, 6, 7, 8, 9]
    answer = PARSERS["windows"]("10 - 20")
    assert METRICS["moment_retrieval"]([answer], [moments[0].target])["map"] == 100.0


def test_behavior_loaders(tmp_path):
    behavior_fixtures(tmp_path)
    likes = load("blift_likes_r2", tmp_path)
    assert [(e.id, e.target) for e in likes] == [("yt1", 2.0)]
    assert likes[0].meta["system"].startswith("You are an AI visual assistant")
    assert "What percentage of viewers would like this video" in likes[0].prompt
    assert shard_frames(likes[0]).shape == (2, 8, 8, 3)
    assert [e.target for e in load("blift_replay_rmse", tmp_path)] == [[0.06, 0.23]]
    ppl = load("blift_comment_ppl", tmp_path)
    assert [e.id for e in ppl] == ["yt1", "rd1"]
    start, end = ppl[0].meta["score_spans"][0]
    assert ppl[0].target[start:end] == "What a great ad this is"
    assert shard_frames(ppl[1]).shape == (1, 8, 8, 3)
