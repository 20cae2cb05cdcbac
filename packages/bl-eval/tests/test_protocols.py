"""The protocols on the tiny demo checkpoint, checked against independent forward passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bl_eval.protocols import PROTOCOLS, load_media
from bl_eval.spec import Example, TaskSpec
from bl_model import BehaviorLlavaForCausalLM, BehaviorLlavaProcessor
from bl_model.inference import generate_texts

COLOURS = ["red", "green", "blue", "yellow"]
PROMPT = "<image>\nWhat colour is the object? Answer with one word."


@pytest.fixture(scope="module")
def loaded(demo: Path) -> tuple[BehaviorLlavaForCausalLM, BehaviorLlavaProcessor]:
    torch.manual_seed(0)
    model = BehaviorLlavaForCausalLM.from_pretrained(demo / "model").eval()
    return model, BehaviorLlavaProcessor.from_pretrained(demo / "processor")


def _spec(protocol: str, **kw) -> TaskSpec:
    return TaskSpec(
        "toy", "toy", protocol, "toy_accuracy", loader=lambda root: iter(()), layout="", subdir="", **kw
    )


def _examples(demo: Path, n: int, choices: list[str]) -> list[Example]:
    entries = json.loads((demo / "instructions.json").read_text())[:n]
    return [
        Example(
            e["id"], PROMPT, e["conversations"][1]["value"].split()[4], [demo / e["image"]], choices=choices
        )
        for e in entries
    ]


@torch.no_grad()
def _independent_logprob(model, processor, example: Example, answer: str) -> tuple[float, int]:
    """Forward the whole prompt + answer (real media) and sum log-softmax over the answer's own tokens."""
    media = load_media(example.prompt, example.media, processor.max_frames)
    prompt = processor.prompt_for_generation(example.prompt, media)["input_ids"]
    full = processor(
        {"conversations": [{"from": "human", "value": example.prompt}, {"from": "gpt", "value": answer}]},
        media,
    )
    ids = full.pop("input_ids")
    full.pop("labels")
    assert torch.equal(ids[: prompt.numel()], prompt) and ids[-1] == processor.tokenizer.eos_token_id
    logits = model(input_ids=ids[None], **full).logits[0]  # (L, V)
    logp = torch.log_softmax(logits.float(), -1)
    positions = range(prompt.numel(), ids.numel() - 1)  # the answer's tokens, "</s>" excluded
    return sum(float(logp[t - 1, ids[t]]) for t in positions), len(positions)


def test_logprob_picks_highest_summed_logprob(demo, loaded):
    model, processor = loaded
    examples = _examples(demo, 2, [*COLOURS, "a red square"])  # a multi-token label too
    records = PROTOCOLS["logprob"](model, processor, _spec("logprob"), examples, 2)
    for example, record in zip(examples, records, strict=True):
        expected = [_independent_logprob(model, processor, example, c)[0] for c in example.choices]
        np.testing.assert_allclose(
            [record["scores"][c] for c in example.choices], expected, rtol=1e-4, atol=1e-4
        )
        assert record["prediction"] == example.choices[int(np.argmax(expected))]
        assert record["id"] == example.id and "error" not in record


def test_retrieval_picks_highest_mean_logprob(demo, loaded):
    model, processor = loaded
    statements = [
        "I should buy it because it is red",
        "blue",
        "The object is a green circle.",
        "yellow square",
    ]
    [example] = _examples(demo, 1, statements)
    [record] = PROTOCOLS["retrieval"](model, processor, _spec("retrieval"), [example], 3)
    expected = [s / n for s, n in (_independent_logprob(model, processor, example, c) for c in statements)]
    np.testing.assert_allclose(record["scores"], expected, rtol=1e-4, atol=1e-4)
    assert record["prediction"] == int(np.argmax(expected))


def test_generate_batched_matches_one_by_one(demo, loaded):
    model, processor = loaded
    examples = _examples(demo, 3, None)
    examples[1].prompt = "<image>\nDescribe the object in this image in detail, please."  # another length
    records = PROTOCOLS["generate"](
        model, processor, _spec("generate", parser="text", max_new_tokens=6), examples, 3
    )
    encoded = [
        processor.prompt_for_generation(e.prompt, load_media(e.prompt, e.media, processor.max_frames))
        for e in examples
    ]
    one_by_one = [generate_texts(model, processor, [e], 6)[0] for e in encoded]
    assert [r["raw"] for r in records] == [r["prediction"] for r in records] == one_by_one
    batch = processor.collate(encoded, padding_side="left")
    assert batch["attention_mask"][:, -1].all() and not batch["attention_mask"][:, 0].all()  # left-padded


def test_kshot_puts_shots_before_the_query(demo, loaded):
    model, processor = loaded
    shots, query = _examples(demo, 3, None)[:2], _examples(demo, 3, None)[2]
    query.shots = [(s.prompt, s.target, s.media) for s in shots]
    media = [m for e in [*shots, query] for m in load_media(e.prompt, e.media, processor.max_frames)]
    encoded = processor.prompt_for_generation([shots[0].prompt, shots[0].target, query.prompt], media[::2])
    assert encoded["media_frame_counts"].tolist() == [1, 1] and "labels" not in encoded
    text = processor.tokenizer.decode(
        encoded["input_ids"][encoded["input_ids"] != model.config.media_token_id]
    )
    assert text.count("USER:") == 2 and text.count("ASSISTANT:") == 2 and shots[0].target in text
    [record] = PROTOCOLS["kshot"](model, processor, _spec("kshot", shots=2, max_new_tokens=4), [query], 1)
    assert isinstance(record["raw"], str) and "error" not in record
    with pytest.raises(ValueError, match="needs 3"):
        PROTOCOLS["kshot"](model, processor, _spec("kshot", shots=3), [query], 1)


def test_unreadable_media_is_recorded_not_raised(demo, loaded):
    model, processor = loaded
    [example] = _examples(demo, 1, COLOURS)
    example.media = [demo / "missing.png"]
    for protocol in ("logprob", "generate"):
        [record] = PROTOCOLS[protocol](model, processor, _spec(protocol, max_new_tokens=2), [example], 1)
        assert record["prediction"] is None and "FileNotFoundError" in record["error"]


def test_load_media_samples_video_at_1fps_capped(bikes_mp4):
    [video] = load_media("<video>\nWhat happens?", [bikes_mp4], max_frames=4)
    assert video.is_video and video.num_frames == 4  # 10 s at 1 fps, capped at 4
    [all_frames] = load_media("<video>", [bikes_mp4], max_frames=300)
    assert all_frames.num_frames == 10
    with pytest.raises(ValueError, match="2 media placeholders but 1"):
        load_media("<image><video>", [bikes_mp4], max_frames=4)
