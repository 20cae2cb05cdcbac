"""`llamavid_prompt`: the prompt / label algorithm's functions on small hand-checked conversations, and the whole
algorithm (no image processor, no pixels) against LLaVA's reference re-derived on raw SentencePiece."""

from __future__ import annotations

import random
import shutil
from typing import NamedTuple

import numpy as np
import pytest
import torch
from transformers import BertTokenizerFast, LlamaTokenizer

from bl_model.configuration import IGNORE_INDEX
from bl_model.conversation import MEDIA_TOKEN, RenderedPrompt, get_template
from bl_model.llamavid_prompt import (
    LlamaVidPrompt,
    SampleBudgetError,
    llamavid_turns,
    place_media,
    read_conversation,
    supervised_labels,
)
from bl_model.tokenization import add_media_token

from .test_llamavid_tokens import IMAGE, SYSTEM, SlowLlama, expand, v1_labels


class Item(NamedTuple):
    """A media item as the algorithm sees it: no pixels."""

    num_frames: int
    is_video: bool


class ScriptedRng:
    """`random.Random` stand-in whose `randint(0, 1)` answers are given."""

    def __init__(self, draws: list[int]):
        self.draws = list(draws)

    def randint(self, a: int, b: int) -> int:
        assert (a, b) == (0, 1)
        return self.draws.pop(0)


def turns(*values: str) -> list[dict]:
    return [{"from": ("human", "gpt")[i % 2], "value": value} for i, value in enumerate(values)]


def test_read_conversation():
    assert read_conversation({"id": 7, "conversations": turns("q", "a")}) == ("7", ["q", "a"])
    errors = {
        "no conversations": {"id": "s1"},
        "turn 1 has unknown 'from' 'bot'": {"id": "s1", "conversations": [*turns("q"), {"from": "bot"}]},
        "turn 0 is from 'gpt'": {"id": "s1", "conversations": turns("q", "a")[::-1]},
        "the last turn must be from 'gpt'": {"id": "s1", "conversations": turns("q", "a", "q2")},
    }
    for message, sample in errors.items():
        with pytest.raises(ValueError, match=f"sample s1: {message}"):
            read_conversation(sample)


def test_llamavid_turns_hand_checked():
    """Turns before the first placeholder are untouched; the turn that writes it gets it in front, stripped;
    every later human turn gets it in front (draw 0) or at the end (draw 1); prompts lose their newlines."""
    messages = ["Hi", "Hello", "Describe the clip.\n<video>", "A", "Why\nnow?", "B", "More?", "C"]
    rewritten, prompts = llamavid_turns(messages, ScriptedRng([0, 1]))
    assert rewritten == [
        "Hi",
        "Hello",
        "<video>\nDescribe the clip.",
        "A",
        "<video>\nWhy\nnow?",
        "B",
        "More?\n<video>",
        "C",
    ]
    assert prompts == ["Describe the clip.", "Whynow?", "More?"]
    # a turn writing several placeholders keeps one; no placeholder at all: nothing changes, no draws
    assert llamavid_turns(["<image> and <image>\nthis", "x"], ScriptedRng([])) == (
        ["<image>\nand \nthis", "x"],
        ["and this"],
    )
    assert llamavid_turns(["plain", "x", "text"], ScriptedRng([])) == (["plain", "x", "text"], [])


def test_place_media_as_written_and_shared():
    messages = ["<video>\nFirst?", "a", "Then <image> and", "b"]
    placed = place_media("s", messages, [True, False])
    assert placed.messages == [f"{MEDIA_TOKEN}\nFirst?", "a", f"Then {MEDIA_TOKEN} and", "b"]
    assert placed.shown == [0, 1] and placed.queries == ["First?", "Then  and"]
    # llamavid: every placeholder shows media 0, prompted by the given per-turn prompts
    shared = place_media("s", ["<video>\nq1", "a", "q2\n<video>", "b"], [True], prompts=["q1", "q2"])
    assert shared.shown == [0, 0] and shared.queries == ["q1", "q2"]


@pytest.mark.parametrize(
    ("messages", "kinds", "message"),
    [
        (["<video> <video>", "a"], [True], "more placeholders than media \\(1 media items given\\)"),
        (
            ["<image>", "a"],
            [True],
            "placeholder <image> \\(turn 0\\) is matched with media 0, which is a video",
        ),
        (["<video>", "a"], [True, True], "2 media items but only 1 placeholders \\(1 media unused\\)"),
    ],
)
def test_place_media_errors(messages, kinds, message):
    with pytest.raises(ValueError, match=f"sample s9: {message}"):
        place_media("s9", messages, kinds)


def test_supervised_labels_hand_checked():
    """A token is labelled iff it covers a supervised character; `supervise` spans are relative to each answer."""
    text = "USER: hi ASSISTANT: yo there</s>"
    rendered = RenderedPrompt(text, supervised_spans=((19, 32),), answer_starts=(20,))
    words = [(0, 5), (6, 8), (9, 19), (19, 22), (23, 28), (28, 32)]  # "USER:", "hi", "ASSISTANT:", " yo", ...
    ids = torch.arange(10, 16)  # (6,)
    offsets = np.array(words)  # (6, 2)
    assert supervised_labels(ids, offsets, rendered, ["yo there"]).tolist() == [-100, -100, -100, 13, 14, 15]
    only_there = supervised_labels(ids, offsets, rendered, ["yo there"], supervise=lambda answer: [(3, 8)])
    assert only_there.tolist() == [-100, -100, -100, -100, 14, -100]
    partial = supervised_labels(ids, offsets, rendered, ["yo there"], supervise=lambda answer: [(1, 2)])
    assert partial.tolist() == [-100, -100, -100, 13, -100, -100]  # " yo" covers "o"


@pytest.fixture(scope="module")
def prompt_parts(llama_spm_model, bert_vocab_path, tmp_path_factory):
    """(LLaMA tokenizer with `<media>` 32000, legacy=False; Q-Former tokenizer; the SentencePiece reference)."""
    spm_dir = tmp_path_factory.mktemp("prompt_spm")
    shutil.copyfile(llama_spm_model, spm_dir / "tokenizer.model")
    tokenizer = LlamaTokenizer.from_pretrained(spm_dir, legacy=False, add_bos_token=True)
    add_media_token(tokenizer, 32000)
    qformer = BertTokenizerFast(vocab=str(bert_vocab_path), truncation_side="left")
    return tokenizer, qformer, SlowLlama(llama_spm_model, legacy=False)


def make_prompt(prompt_parts, **settings) -> LlamaVidPrompt:
    tokenizer, qformer, _ = prompt_parts
    defaults = {
        "image_tokens": 3,
        "video_frame_tokens": 2,
        "qformer_max_length": 32,
        "max_length": 256,
        "max_frames": 8,
        "preprocess": "llamavid",
    }
    return LlamaVidPrompt(
        tokenizer, qformer, get_template("vicuna_v1"), media_token_id=32000, **defaults | settings
    )


def test_encode_sample_matches_llava_reference(prompt_parts):
    """Two llamavid turns (the second draws the end side) on a 4-frame video, without pixels: ids and
    labels are LLaVA's `tokenizer_image_token` + v1 masking on raw SentencePiece, each placeholder expanded to
    4 frames x 2 tokens; the Q-Former prompts are the turns' texts without newlines."""
    _, qformer, slow = prompt_parts
    sample = {
        "id": "p1",
        "conversations": turns("Describe it.\n<video>", "A dog runs.", "Why\nso fast?", "Fun."),
    }
    seed = next(s for s in range(100) if random.Random(s).randint(0, 1) == 1)  # the video at the end
    encoded = make_prompt(prompt_parts).encode_sample(sample, [Item(4, True)], seed=seed)
    conversation = f"{SYSTEM} USER: <image>\nDescribe it. ASSISTANT: A dog runs.</s>USER: Why\nso fast?\n<image> ASSISTANT: Fun.</s>"
    ids = slow.image_tokens(conversation)
    assert ids.count(IMAGE) == 2
    assert encoded.input_ids.tolist() == expand(ids, ids, [8, 8], 32000)
    assert encoded.labels.tolist() == expand(v1_labels(slow, conversation, ids), ids, [8, 8], IGNORE_INDEX)
    queries = [
        q[m.bool()].tolist()
        for q, m in zip(encoded.query_input_ids, encoded.query_attention_mask, strict=True)
    ]
    assert queries == [qformer("Describe it.")["input_ids"], qformer("Whyso fast?")["input_ids"]]
    assert encoded.query_media_index.tolist() == [0, 0]


def test_generation_prompt_as_written(prompt_parts):
    """An image then a video, each its own media item; an open assistant turn, no labels."""
    _, qformer, slow = prompt_parts
    prompt = make_prompt(prompt_parts, preprocess="as_written")
    encoded = prompt.encode(
        "g", ["<image> and <video>\nSame?"], [Item(1, False), Item(3, True)], None, with_labels=False
    )
    ids = slow.image_tokens(f"{SYSTEM} USER: <image> and <image>\nSame? ASSISTANT:")
    assert encoded.labels is None
    assert encoded.input_ids.tolist() == expand(ids, ids, [3, 6], 32000)
    assert encoded.query_media_index.tolist() == [0, 1]
    assert (
        encoded.query_input_ids[1][encoded.query_attention_mask[1].bool()].tolist()
        == qformer("and \nSame?")["input_ids"]
    )


def test_budgets_raise_sample_budget_errors(prompt_parts):
    sample = {"id": "big", "conversations": turns("<video>\nq", "a")}
    with pytest.raises(SampleBudgetError, match="sample big: media 0 has 9 frames, more than max_frames=8"):
        make_prompt(prompt_parts).encode_sample(sample, [Item(9, True)])
    with pytest.raises(
        SampleBudgetError, match=r"sample big: \d+ tokens after media expansion exceed max_length=40"
    ):
        make_prompt(prompt_parts, max_length=40).encode_sample(sample, [Item(8, True)])
    with pytest.raises(ValueError, match="sample big: the text contains the reserved token <media>"):
        make_prompt(prompt_parts).encode_sample({"id": "big", "conversations": turns("<media>", "a")}, [])
