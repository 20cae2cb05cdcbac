"""Token ids and labels against LLaMA-VID's text pipeline, for legacy=True and legacy=False LLaMA tokenizers.

Two references. The golden cases (`golden/llamavid_golden.json`, written by `golden/make_llamavid_golden.py`) are
what LLaMA-VID ran: transformers 4.31's slow `LlamaTokenizer` on the SentencePiece model, through LLaVA's
`tokenizer_image_token`, LLaMA-VID's turn preprocessing and LLaVA's v1 label masking, over multi-turn samples and
generation prompts. The tests below them re-derive a few of those from the algorithm on the raw SentencePiece
model (not on `tokenizers`): `tokenizer_image_token` (the prompt split at each placeholder, every piece encoded as
a text of its own, one bos, the pieces joined with the image id), LLaMA-VID's turn preprocessing (placeholder
moved to the front of its turn, the media added to every later human turn on a random side, each turn's Q-Former
prompt with `\\n` removed) and LLaVA's v1 label masking (round lengths: everything after each "ASSISTANT:"
colon, through its "</s>").
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
from PIL import Image
from transformers import BertTokenizerFast, LlamaTokenizer

from bl_model.configuration import IGNORE_INDEX, BehaviorLlavaConfig
from bl_model.llamavid_prompt import sample_seed
from bl_model.processing import BehaviorLlavaProcessor, Media

from .test_image_processing import clip_pixels

IMAGE = -200  # LLaVA's IMAGE_TOKEN_INDEX, expanded to the processor's media tokens below
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)
CONFIG = BehaviorLlavaConfig()  # mean compression: 2 tokens per frame
GOLDEN = json.loads((Path(__file__).parent / "golden" / "llamavid_golden.json").read_text())


class SlowLlama:
    """transformers 4.31's slow LLaMA tokenizer on the SentencePiece model: text split at "</s>"; every part is
    encoded with the "▁" prefix, and when not `legacy` a part after "</s>" that does not start with a space loses
    it again: its first piece "▁x" becomes the piece "x" (unk if "x" is no piece), a lone "▁" is dropped."""

    def __init__(self, model_file, legacy: bool):
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.legacy = legacy

    def encode(self, text: str) -> list[int]:
        """Without bos."""
        ids: list[int] = []
        for j, part in enumerate(text.split("</s>")):
            if j:
                ids.append(2)
            if not part:
                continue
            pieces = self.sp.encode(part, out_type=str)
            if j and not self.legacy and not part.startswith(" ") and pieces[0].startswith("▁"):
                pieces = ([pieces[0][1:]] if pieces[0] != "▁" else []) + pieces[1:]
            ids += [self.sp.piece_to_id(piece) for piece in pieces]
        return ids

    def image_tokens(self, prompt: str) -> list[int]:
        """LLaVA's `tokenizer_image_token`: bos, then the pieces between placeholders joined by IMAGE."""
        ids = [1]
        for i, chunk in enumerate(re.split("<image>|<video>", prompt)):
            ids += ([IMAGE] if i else []) + self.encode(chunk)
        return ids


def v1_labels(slow: SlowLlama, conversation: str, ids: list[int]) -> list[int]:
    """LLaVA's `preprocess_v1` masking by round lengths. The lengths must add up."""
    labels = list(ids)
    cur = 1
    labels[:cur] = [IGNORE_INDEX] * cur
    sep = " ASSISTANT: "
    for rou in conversation.split("</s>"):
        if rou == "":
            break
        instruction, _ = rou.split(sep)
        round_len = len(slow.image_tokens(rou))
        instruction_len = len(slow.image_tokens(instruction + sep)) - 2
        labels[cur : cur + instruction_len] = [IGNORE_INDEX] * instruction_len
        cur += round_len
    assert cur == len(ids), "the round lengths must tile the conversation"
    return labels


def expand(values: list[int], ids: list[int], counts: list[int], image_value: int) -> list[int]:
    """`values` aligned with `ids`; at each IMAGE of `ids`, that media's token count copies of `image_value`."""
    out: list[int] = []
    images = iter(counts)
    for value, token in zip(values, ids, strict=True):
        out += [image_value] * next(images) if token == IMAGE else [value]
    return out


def video(frames: int, seed: int = 0) -> Media:
    return Media(np.random.default_rng(seed).integers(0, 256, (frames, 12, 16, 3), dtype=np.uint8), True)


@pytest.fixture(params=[True, False], ids=["legacy", "non-legacy"])
def tokenizers(request, llama_spm_model, tmp_path_factory, bert_tokenizer):
    """(processor in llamavid mode, SlowLlama reference) for one legacy setting."""
    legacy = request.param
    spm_dir = tmp_path_factory.mktemp("spm")
    (spm_dir / "tokenizer.model").write_bytes(llama_spm_model.read_bytes())
    tokenizer = LlamaTokenizer.from_pretrained(spm_dir, legacy=legacy, add_bos_token=True)
    processor = BehaviorLlavaProcessor.from_config(tokenizer, bert_tokenizer, CONFIG, preprocess="llamavid")
    return processor, SlowLlama(llama_spm_model, legacy)


def query_texts(processor, out) -> list[list[int]]:
    return [
        q[m.bool()].tolist() for q, m in zip(out["query_input_ids"], out["query_attention_mask"], strict=True)
    ]


def test_eval_prompt(tokenizers, bert_tokenizer):
    """(a) LLaMA-VID's evaluation prompt: `"<image>\\n" + question`, an open ASSISTANT turn."""
    processor, slow = tokenizers
    question = "What is the man doing?"
    out = processor.prompt_for_generation(f"<video>\n{question}", [video(3)])
    prompt = f"{SYSTEM} USER: <image>\n{question} ASSISTANT:"
    expected = expand(
        ids := slow.image_tokens(prompt), ids, [CONFIG.media_tokens(3, True)], CONFIG.media_token_id
    )
    assert out["input_ids"].tolist() == expected
    # written down: "USER: " ends in "▁", the piece after the placeholder starts with its own "▁"
    pieces = processor.tokenizer.convert_ids_to_tokens(out["input_ids"].tolist())
    start = pieces.index("<media>")
    assert pieces[start - 3 : start] == ["ER", ":", "▁"] and pieces[start : start + 6] == ["<media>"] * 6
    assert pieces[start + 6 :] == [
        "▁",
        "<0x0A>",
        "What",
        "▁is",
        "▁the",
        "▁man",
        "▁doing",
        "?",
        "▁ASS",
        "IST",
        "ANT",
        ":",
    ]
    assert query_texts(processor, out) == [bert_tokenizer(question)["input_ids"]]


@pytest.mark.parametrize("side", ["front", "end"])
def test_two_turn_video_sample(tokenizers, bert_tokenizer, side):
    """(b) The video is shown in both human turns, the second on the side drawn from the seed, each with
    its own Q-Former prompt (newlines removed, no space inserted)."""
    processor, slow = tokenizers
    seed = next(s for s in range(100) if (random.Random(s).randint(0, 1) == 0) == (side == "front"))
    sample = {
        "id": "vid-2",
        "conversations": [
            {"from": "human", "value": "Describe the clip.\n<video>"},
            {"from": "gpt", "value": "A man rides a red bike."},
            {"from": "human", "value": "Why is he\nin a hurry?"},
            {"from": "gpt", "value": "He is late."},
        ],
    }
    out = processor(sample, [video(2)], seed=seed)
    second = "<image>\nWhy is he\nin a hurry?" if side == "front" else "Why is he\nin a hurry?\n<image>"
    conversation = (
        f"{SYSTEM} USER: <image>\nDescribe the clip. ASSISTANT: A man rides a red bike.</s>"
        f"USER: {second} ASSISTANT: He is late.</s>"
    )
    ids = slow.image_tokens(conversation)
    counts = [CONFIG.media_tokens(2, True)] * 2
    assert out["input_ids"].tolist() == expand(ids, ids, counts, CONFIG.media_token_id)
    assert out["labels"].tolist() == expand(v1_labels(slow, conversation, ids), ids, counts, IGNORE_INDEX)
    supervised = out["labels"][out["labels"] != IGNORE_INDEX].tolist()
    assert supervised == slow.encode("A man rides a red bike.</s>") + slow.encode("He is late.</s>")
    assert query_texts(processor, out) == [
        bert_tokenizer("Describe the clip.")["input_ids"],
        bert_tokenizer("Why is hein a hurry?")["input_ids"],
    ]
    assert out["query_media_index"].tolist() == [0, 0] and out["media_frame_counts"].tolist() == [2]
    assert torch.equal(processor(sample, [video(2)])["input_ids"], processor(sample, [video(2)])["input_ids"])


def test_still_image_sample(tokenizers, bert_tokenizer):
    """(c) A still image: its placeholder moved to the front, the image padded to a square by default."""
    processor, slow = tokenizers
    sample = {
        "id": "img-7",
        "conversations": [
            {"from": "human", "value": "What is in this picture?\n<image>"},
            {"from": "gpt", "value": "2 cats on a sofa."},
        ],
    }
    pixels = np.random.default_rng(3).integers(0, 256, (20, 40, 3), dtype=np.uint8)  # wide
    out = processor(sample, [Media(Image.fromarray(pixels), is_video=False)])
    conversation = f"{SYSTEM} USER: <image>\nWhat is in this picture? ASSISTANT: 2 cats on a sofa.</s>"
    ids = slow.image_tokens(conversation)
    counts = [CONFIG.media_tokens(1, False)]
    assert out["input_ids"].tolist() == expand(ids, ids, counts, CONFIG.media_token_id)
    labels = out["labels"].tolist()
    assert labels == expand(v1_labels(slow, conversation, ids), ids, counts, IGNORE_INDEX)
    first = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    assert processor.tokenizer.convert_ids_to_tokens(labels[first : first + 2]) == ["▁", "2"]  # after ":"
    assert query_texts(processor, out) == [bert_tokenizer("What is in this picture?")["input_ids"]]
    torch.testing.assert_close(out["pixel_values"], clip_pixels(pixels, pad_to_square=True), rtol=0, atol=0)
    assert not torch.equal(out["pixel_values"], clip_pixels(pixels))


def test_default_seed_is_the_sample_id(tokenizers):
    processor, _ = tokenizers
    sample = {
        "id": "many-turns",
        "conversations": [
            turn
            for q in range(12)
            for turn in (
                {"from": "human", "value": f"<video>\nQ{q}" if q == 0 else f"Q{q}"},
                {"from": "gpt", "value": "ok"},
            )
        ],
    }
    default = processor(sample, [video(1)])
    assert torch.equal(
        default["input_ids"], processor(sample, [video(1)], seed=sample_seed("many-turns"))["input_ids"]
    )
    other = processor(sample, [video(1)], seed=sample_seed("many-turns") + 1)
    assert not torch.equal(default["input_ids"], other["input_ids"])  # 11 sides: 1 / 2048 chance to agree


def test_llamavid_mode_takes_one_media_item(tokenizers):
    processor, _ = tokenizers
    sample = {
        "id": "two",
        "conversations": [{"from": "human", "value": "<video> <video>"}, {"from": "gpt", "value": "ok"}],
    }
    with pytest.raises(ValueError, match="sample two: 2 media items; llamavid"):
        processor(sample, [video(1), video(1)])


@pytest.fixture(scope="module")
def golden_processor(llama_spm_model, bert_vocab_path, tmp_path_factory):
    """(legacy, preprocess, added tokens) -> a processor on transformers 5's LLaMA tokenizer of the golden cases'
    SentencePiece model (built once per module: copying a tokenizer takes most of a second)."""
    sha256 = hashlib.sha256(llama_spm_model.read_bytes()).hexdigest()
    assert sha256 == GOLDEN["made_with"]["spm_model_sha256"], "the golden ids were made with another model"
    spm_dir = tmp_path_factory.mktemp("golden_spm")
    shutil.copyfile(llama_spm_model, spm_dir / "tokenizer.model")
    processors: dict[tuple, BehaviorLlavaProcessor] = {}

    def get(legacy: bool, preprocess: str, added_tokens: list[str]) -> BehaviorLlavaProcessor:
        key = (legacy, preprocess, *added_tokens)
        if key not in processors:
            tokenizer = LlamaTokenizer.from_pretrained(spm_dir, legacy=legacy, add_bos_token=True)
            tokenizer.add_tokens(added_tokens, special_tokens=True)  # numbered before <media>, as LLaMA-VID
            config = BehaviorLlavaConfig(media_token_id=len(tokenizer))
            qformer_tokenizer = BertTokenizerFast(vocab=str(bert_vocab_path), truncation_side="left")
            processors[key] = BehaviorLlavaProcessor.from_config(
                tokenizer, qformer_tokenizer, config, preprocess=preprocess
            )
        return processors[key]

    return get


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "non-legacy"])
@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[case["name"] for case in GOLDEN["cases"]])
def test_golden_ids_of_llamavid_under_transformers_4_31(case, legacy, golden_processor):
    """Ids and labels equal LLaMA-VID's under transformers 4.31's slow LlamaTokenizer: `imgsp_v1` training samples
    in `llamavid` mode, `vicuna_v1` samples in `as_written` mode, generation prompts (always as written)."""
    preprocess = "llamavid" if case["template"] == "imgsp_v1" else "as_written"
    processor = golden_processor(legacy, preprocess, case["added_tokens"])
    media = [
        video(m["frames"], seed=i) if m["is_video"] else Media(np.zeros((8, 8, 3), np.uint8), is_video=False)
        for i, m in enumerate(case["media"])
    ]
    if case["kind"] == "generation":
        out = processor.prompt_for_generation(case["messages"], media)
    else:
        turns = [{"from": ("human", "gpt")[i % 2], "value": text} for i, text in enumerate(case["messages"])]
        out = processor({"id": case["name"], "conversations": turns}, media, seed=case["seed"])

    golden = case[f"legacy={legacy}"]
    ids = golden["input_ids"]
    placeholders = ids.count(IMAGE)  # llamavid: all show the one media item; as written: one item each
    one_item = preprocess == "llamavid" and case["kind"] == "train"
    shown = [0] * placeholders if one_item else range(placeholders)
    counts = [processor.media_tokens(media[m].num_frames, media[m].is_video) for m in shown]
    assert out["input_ids"].tolist() == expand(ids, ids, counts, processor.media_token_id)
    if case["kind"] == "train":
        assert out["labels"].tolist() == expand(golden["labels"], ids, counts, IGNORE_INDEX)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "non-legacy"])
def test_golden_texts_of_transformers_4_31(legacy, golden_processor):
    """Generation prompts whose question holds special tokens, runs of spaces, digits, newlines, tabs, "▁" and other
    scripts tokenise as transformers 4.31's slow LlamaTokenizer does (the golden file's `texts`)."""
    processor = golden_processor(legacy, "as_written", [])
    wrong = {}
    for item in GOLDEN["texts"]:
        ids = processor.prompt_for_generation(item["text"], [])["input_ids"].tolist()
        if ids != (expected := item[f"legacy={legacy}"]):
            wrong[item["text"]] = [processor.tokenizer.convert_ids_to_tokens(x) for x in (ids, expected)]
    assert not wrong, "tokens (ours, transformers 4.31's) of each text that differs"
