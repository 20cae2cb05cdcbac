"""Templates: Listing 1 reproduced verbatim, and golden files for every variant.

Regenerate the golden files with `BL_UPDATE_GOLDEN=1 uv run pytest packages/bl-data/tests/test_verbalize.py`
and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bl_data.records import Comment, Post, SceneDescription
from bl_data.verbalize import (
    SALICON_REGIONS,
    SYSTEM,
    VerbalizedSample,
    describe_scene,
    rank_regions,
    salicon_objects,
    salicon_regions,
    scene_sentence,
    verbalize,
)

GOLDEN = Path(__file__).parent / "golden"

LISTING_USER = (
    'The video advertisement is titled "Gatorade | Make Your Own Footsteps with Suni Lee" for the brand '
    'Gatorade. The audio in the ad says "[ASR HERE ...]". Analyze this video deeply, then write scene by scene '
    "description of the video and answer the following questions. What percentage of viewers would like this "
    "video, and what would be the top-5 popular comments on this video? What would the replay graph values for "
    "each scene be?"
)
LISTING_SCENE_1 = (
    "Scene 1: The scene shows a woman looking off into the distance with an orange line going around the outside "
    "of the screen. The foreground colors of the scene are black, mud green, gray, dark gray, and the background "
    "colors are dark brown, black, dark gray. The dominant tone of the scene is neutral. This scene is "
    "categorized by the tags: cosmetic, eyebrow, face, girl, ponytail, stand, string, woman."
)
LISTING_BEHAVIOR = """>>> BEHAVIOR <<<

The video will be liked by 2.0% of viewers, and the popular comments could be:
1. "Wow. Love it. She's such an inspiration to the next generation as well as everyone."
2. "Inspiring and great story behind this commercial. ..."
3. "She's an inspiration to the world. ..."
4. "Chills watching this. Such an inspiration."
5. "Yooooo, this is straight up!"

The replay values for each scene would be:
Scene 1: 0.06
Scene 2: 0.23
Scene 3: 0.38"""

SCENES = [
    SceneDescription(
        "A woman looking off into the distance with an orange line going around the outside of the screen.",
        ("black", "mud green", "gray", "dark gray"),
        ("dark brown", "black", "dark gray"),
        "neutral",
        ("cosmetic", "eyebrow", "face", "girl", "ponytail", "stand", "string", "woman"),
    ),
    SceneDescription(
        "a woman balancing on a skateboard in a yard",
        ("green", "white", "gray"),
        ("dark green", "green", "black"),
        "neutral",
        ("athletic", "balance", "beam"),
    ),
    SceneDescription(
        "Suni Lee on the balance beam",
        ("white", "gray", "black"),
        ("black", "dark gray", "navy"),
        "dark",
        ("gymnast", "arena"),
        ocr="MAKE YOUR\nOWN FOOTSTEPS",
    ),
]
NO_CAPTION = [SceneDescription(None, s.foreground_colors, s.background_colors, s.tone) for s in SCENES]


def _youtube_post(**overrides: object) -> Post:
    comments = [
        Comment("Chills watching this. Such an inspiration.", likes=40),
        Comment(
            "Wow. Love it. She's such an inspiration to the next generation as well as everyone.", likes=900
        ),
        Comment("Yooooo, this is straight up!", likes=40),
        Comment("Inspiring and great story behind this commercial. ...", likes=500),
        Comment("She's an inspiration to the world. ...", likes=120),
        Comment("a sixth, less liked comment", likes=3),
    ]
    fields: dict = {
        "title": "Gatorade | Make Your Own Footsteps with Suni Lee",
        "channel": "Gatorade",
        "view_count": 150_000,
        "like_count": 3_000,
        "comment_count": 6,
        "comments": comments,
        "media_path": Path("BKPQkjRF4yY.mp4"),
    }
    fields.update(overrides)
    return Post(id="BKPQkjRF4yY", source="youtube", **fields)


def _reddit_post(is_video: bool, **overrides: object) -> Post:
    fields: dict = {
        "title": "My dog saw snow for the first time",
        "subreddit": "videos" if is_video else "pics",
        "score": 1234,
        "comment_count": 57,
        "comments": [
            Comment("This is pure joy\nin a video", likes=300),
            Comment('He said "zoomies" and meant it', likes=800),
        ],
        "media_path": Path("abc123.mp4" if is_video else "abc123.jpg"),
        "is_video": is_video,
    }
    fields.update(overrides)
    return Post(id="abc123", source="reddit", **fields)


def _render(sample: VerbalizedSample) -> str:
    parts = [("id", sample.id), ("system", sample.system), ("human", sample.human), ("gpt", sample.gpt)]
    parts += [
        (k, json.dumps(getattr(sample, k), indent=2, sort_keys=True)) for k in ("behavior", "provenance")
    ]
    return "".join(f"### {name}\n{text}\n" for name, text in parts)


def _check_golden(name: str, sample: VerbalizedSample) -> None:
    path = GOLDEN / f"{name}.txt"
    text = _render(sample)
    if os.environ.get("BL_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{path} differs; see the module docstring to regenerate"


def test_listing_1_verbatim() -> None:
    sample = verbalize(_youtube_post(), SCENES, replay=[0.06, 0.23, 0.38], asr="[ASR HERE ...]")
    assert (
        sample.system
        == SYSTEM
        == (
            "You are an AI visual assistant. You are given a detailed description of a media, followed by the actual "
            "media. Answer all questions as if you are seeing the media."
        )
    )
    assert sample.human == LISTING_USER + "\n<video>"
    assert sample.gpt.startswith("The scene-by-scene descriptions are:\n\n" + LISTING_SCENE_1 + "\nScene 2: ")
    assert sample.gpt.endswith("\n\n" + LISTING_BEHAVIOR)
    assert "The text shown in the scene is 'MAKE YOUR OWN FOOTSTEPS'." in sample.gpt
    assert sample.conversation() == {
        "id": "BKPQkjRF4yY",
        "conversations": [{"from": "human", "value": sample.human}, {"from": "gpt", "value": sample.gpt}],
        "system": SYSTEM,
    }
    assert sample.behavior["likes_percent"] == 2.0
    assert sample.provenance["captions"] == "all"
    json.dumps(sample.to_json())  # the shard member is plain JSON
    _check_golden("youtube_video", sample)


def test_youtube_without_captioner_asr_or_heatmap() -> None:
    sample = verbalize(_youtube_post(channel=None), NO_CAPTION, provenance={"captioner": None})
    assert sample.human.startswith(
        'The video advertisement is titled "Gatorade | Make Your Own Footsteps with Suni Lee". '
    )
    assert "audio" not in sample.human and "replay" not in sample.human + sample.gpt
    assert sample.gpt.splitlines()[2].startswith(
        "Scene 1: The foreground colors of the scene are black, mud green"
    )
    assert sample.provenance["captions"] == "none" and sample.provenance["captioner"] is None
    _check_golden("youtube_video_no_captioner", sample)


def test_reddit_video_and_image() -> None:
    video = verbalize(_reddit_post(True), SCENES[:2], asr="woof woof")
    assert video.human.endswith(
        "How many upvotes would this video get, and what would be the top-5 popular "
        "comments on this video?\n<video>"
    )
    assert '1. "He said "zoomies" and meant it"\n2. "This is pure joy in a video"' in video.gpt
    _check_golden("reddit_video", video)
    image = verbalize(_reddit_post(False), SCENES[2:])
    assert image.human.count("<image>") == 1 and "<video>" not in image.human
    assert image.gpt.startswith(
        "The description of the image is:\n\nThe image shows Suni Lee on the balance beam."
    )
    _check_golden("reddit_image", image)


def test_blift_image_without_upvotes() -> None:
    post = _reddit_post(False, score=None)
    post.source = "blift"
    sample = verbalize(post, SCENES[1:2])
    assert "upvotes" not in sample.human + sample.gpt
    assert "The popular comments could be:\n1." in sample.gpt
    _check_golden("blift_image", sample)


def test_control_has_no_behavior() -> None:
    sample = verbalize(_youtube_post(), SCENES, replay=[0.06, 0.23, 0.38], with_behavior=False)
    assert ">>> BEHAVIOR <<<" not in sample.gpt and "comments" not in sample.human
    assert sample.human.endswith(
        "Analyze this video deeply, then write scene by scene description of the video.\n<video>"
    )
    assert sample.provenance["template"] == "control_video"
    _check_golden("control_video", sample)


def test_salicon_templates() -> None:
    objects = salicon_objects("coco_5670500150", ["dog", "frisbee", "car"])
    assert (
        objects.system == "You are an AI visual assistant. Answer all questions as you are seeing the media"
    )
    assert objects.human.startswith(
        "The objects in this image in no particular order are car, dog, frisbee. Give"
    )
    assert objects.gpt == "dog\nfrisbee\ncar"
    _check_golden("salicon_objects", objects)
    ranking = [
        "middle-right",
        "bottom-center",
        "bottom-right",
        "upper-center",
        "upper-right",
        "middle-center",
        "upper-left",
        "middle-left",
        "bottom-left",
    ]
    regions = salicon_regions("coco_5670500150", ranking)
    assert regions.gpt == "\n".join(ranking)
    _check_golden("salicon_regions", regions)
    with pytest.raises(ValueError, match="each of"):
        salicon_regions("x", ranking[:-1])
    with pytest.raises(ValueError, match="permutation"):
        salicon_objects("x", ["dog", "car"], prompt_order=["dog", "cat"])
    with pytest.raises(ValueError, match="unique"):
        salicon_objects("x", ["dog", "dog"])


def test_rank_regions() -> None:
    saliency = np.zeros((6, 9))
    saliency[2:4, 6:9] = 1.0  # middle-right
    saliency[4:6, 3:6] = 0.5  # bottom-center
    saliency[0, 0] = 0.1  # upper-left
    assert rank_regions(saliency)[:3] == ["middle-right", "bottom-center", "upper-left"]
    assert sorted(rank_regions(saliency)) == sorted(SALICON_REGIONS)


def test_describe_scene_from_pixels() -> None:
    frame = np.full((60, 80, 3), (0, 0, 255), np.uint8)
    frame[15:45, 20:60] = (255, 0, 0)  # mean b* ≈ -64: cool
    scene = describe_scene(frame, caption="The red square", tags=["square"])
    assert scene == SceneDescription("The red square", ("red", "blue"), ("blue",), "cool", ("square",))
    assert scene_sentence(scene) == (
        "The scene shows the red square. The foreground colors of the scene are red, blue, and the background "
        "colors are blue. The dominant tone of the scene is cool. This scene is categorized by the tags: square."
    )


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="one scene"):
        verbalize(_reddit_post(False), SCENES[:2])
    with pytest.raises(ValueError, match="one value per scene"):
        verbalize(_youtube_post(), SCENES, replay=[0.1])
    with pytest.raises(ValueError, match="like_count and view_count"):
        verbalize(_youtube_post(like_count=None), SCENES)
    with pytest.raises(ValueError, match="colours"):
        scene_sentence(SceneDescription("x", (), ("black",), "dark"))
    with pytest.raises(ValueError, match="no behaviour"):
        verbalize(_reddit_post(False, score=None, comments=[]), SCENES[:1])
