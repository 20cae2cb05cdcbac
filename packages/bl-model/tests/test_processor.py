"""BehaviorLlavaProcessor with real tokenizers: media expansion, labels, Q-Former prompts, errors, collation."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from bl_model.configuration import IGNORE_INDEX, BehaviorLlavaConfig
from bl_model.conversation import TEMPLATES, get_template
from bl_model.processing import BehaviorLlavaProcessor, Media

from .test_image_processing import clip_pixels

MEDIA_ID = 32000
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)
ANSWERS = ["A man rides a red bike.", "Because he is late for work.", "The cat sleeps on the sofa."]


def video(frames: int, seed: int = 0, height: int = 12, width: int = 16) -> Media:
    return Media(
        np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8), True
    )


def image(seed: int = 0) -> Media:
    return Media(
        [Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 10, 3), dtype=np.uint8))], False
    )


def three_turn_sample() -> dict:
    return {
        "id": "vid-42",
        "conversations": [
            {"from": "human", "value": "<video>\nWhat happens in the video?"},
            {"from": "gpt", "value": ANSWERS[0]},
            {"from": "human", "value": "Why is he riding so fast?"},
            {"from": "gpt", "value": ANSWERS[1]},
            {"from": "human", "value": "And in this clip? <video>"},
            {"from": "gpt", "value": ANSWERS[2]},
        ],
    }


@pytest.fixture
def make_processor(llama_tokenizer, bert_tokenizer):
    def make(config: BehaviorLlavaConfig | None = None, **kwargs) -> BehaviorLlavaProcessor:
        return BehaviorLlavaProcessor.from_config(
            llama_tokenizer, bert_tokenizer, config or BehaviorLlavaConfig(), **kwargs
        )

    return make


def runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) index ranges of the True runs of a 1-D bool tensor."""
    padded = torch.cat([torch.tensor([False]), mask, torch.tensor([False])]).int()
    edges = torch.nonzero(padded.diff()).flatten().tolist()
    return list(zip(edges[::2], edges[1::2], strict=True))


def collapse_media(ids: torch.Tensor) -> list[int]:
    """Token ids with each run of media ids collapsed to one."""
    return [t for i, t in enumerate(ids.tolist()) if t != MEDIA_ID or i == 0 or ids[i - 1] != MEDIA_ID]


def test_llama_tokenizer_fixture_is_a_llama_spm_tokenizer(llama_tokenizer):
    encoded = llama_tokenizer("Hello world")
    assert llama_tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == ["<s>", "▁Hello", "▁world"]
    special = llama_tokenizer.bos_token_id, llama_tokenizer.eos_token_id, llama_tokenizer.unk_token_id
    assert special == (1, 2, 0)
    assert len(llama_tokenizer) == 32001 and llama_tokenizer.convert_tokens_to_ids("<media>") == MEDIA_ID


def test_three_turns_two_videos(make_processor):
    processor = make_processor()
    media = [video(3, seed=1), video(2, seed=2)]
    out = processor(three_turn_sample(), media)
    ids, labels = out["input_ids"], out["labels"]
    assert ids.dtype == labels.dtype == torch.long and ids.shape == labels.shape

    # Media: 2 tokens per frame (context + mean content), one contiguous run per placeholder.
    media_runs = runs(ids == MEDIA_ID)
    assert [end - start for start, end in media_runs] == [2 * 3, 2 * 2]

    # Prompt layout, written independently of the template code; the text after a placeholder is tokenized
    # as a text of its own (LLaVA's tokenizer_image_token), so it starts with a "▁" (decoded " "), which
    # SentencePiece adds before " ASSISTANT" too.
    expected = (
        f"{SYSTEM} USER: <media> \nWhat happens in the video? ASSISTANT: {ANSWERS[0]}</s>"
        f"USER: Why is he riding so fast? ASSISTANT: {ANSWERS[1]}</s>"
        f"USER: And in this clip? <media>  ASSISTANT: {ANSWERS[2]}</s>"
    )
    collapsed = collapse_media(ids)
    assert collapsed[0] == 1  # bos
    assert processor.tokenizer.decode(collapsed[1:]) == expected
    # The runs sit in turns 1 and 3: the first before the first answer, the second after the second.
    decoded_before = [processor.tokenizer.decode(ids[:start]) for start, _ in media_runs]
    assert ANSWERS[0] not in decoded_before[0] and ANSWERS[1] in decoded_before[1]
    assert decoded_before[1].endswith("USER: And in this clip? ")  # "▁" before <media>

    # Labels: exactly the three answers, each with its closing </s>; everything else ignored.
    supervised = labels != IGNORE_INDEX
    assert torch.equal(labels[supervised], ids[supervised])
    label_runs = runs(supervised)
    assert [processor.tokenizer.decode(labels[s:e]) for s, e in label_runs] == [a + "</s>" for a in ANSWERS]
    assert not supervised[ids == MEDIA_ID].any()

    # Media tensors.
    torch.testing.assert_close(
        out["pixel_values"], torch.cat([clip_pixels(m.frames) for m in media]), rtol=0, atol=0
    )
    assert out["pixel_values"].shape == (5, 3, 224, 224)
    assert out["media_frame_counts"].tolist() == [3, 2] and out["media_frame_counts"].dtype == torch.long
    assert out["media_is_video"].tolist() == [True, True] and out["media_is_video"].dtype == torch.bool
    assert out["query_media_index"].tolist() == [0, 1]


def test_qformer_prompts_per_turn(make_processor, bert_tokenizer):
    processor = make_processor()
    sample = {
        "id": "q-1",
        "conversations": [
            {"from": "human", "value": "<video>\nDescribe THE First clip"},
            {"from": "gpt", "value": "ok"},
            {"from": "human", "value": "  Compare <video> with <image> in Detail  "},
            {"from": "gpt", "value": "ok"},
        ],
    }
    out = processor(sample, [video(2), video(1, seed=3), image()])
    assert len(processor.qformer_tokenizer) == 30523 and processor.qformer_tokenizer.bos_token == "[DEC]"
    query_ids, query_mask = out["query_input_ids"], out["query_attention_mask"]
    assert query_ids.shape[0] == 3 and query_ids.dtype == query_mask.dtype == torch.long
    decoded = [
        processor.qformer_tokenizer.decode(q[m.bool()], skip_special_tokens=True)
        for q, m in zip(query_ids, query_mask, strict=True)
    ]
    assert decoded == ["describe the first clip", "compare with in detail", "compare with in detail"]
    for q, m, text in zip(
        query_ids,
        query_mask,
        ["Describe THE First clip", "Compare  with  in Detail", "Compare  with  in Detail"],
        strict=True,
    ):
        assert q[m.bool()].tolist() == bert_tokenizer(text)["input_ids"]  # [CLS] ... [SEP]
    assert out["query_media_index"].tolist() == [0, 1, 2]
    assert out["media_is_video"].tolist() == [True, True, False]
    assert [end - start for start, end in runs(out["input_ids"] == MEDIA_ID)] == [2 * 2, 2 * 1, 1 + 1]


def test_qformer_prompt_is_left_truncated(make_processor, bert_tokenizer):
    processor = make_processor()
    text = " ".join(f"word{n}" for n in range(300)) + " the very end"
    sample = {
        "id": "long-q",
        "conversations": [{"from": "human", "value": f"<video> {text}"}, {"from": "gpt", "value": "ok"}],
    }
    out = processor(sample, [video(1)])
    ids = out["query_input_ids"][0]
    assert ids.shape == (256,) and out["query_attention_mask"][0].all()
    pieces = bert_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(pieces) > 254
    cls, sep = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    assert ids.tolist() == [cls, *pieces[-254:], sep]  # the END of the prompt is kept
    assert processor.qformer_tokenizer.decode(ids, skip_special_tokens=True).endswith("word299 the very end")


def test_grid_image_compression(make_processor):
    processor = make_processor(BehaviorLlavaConfig(image_compress="grid:2"))
    sample = {
        "id": "img-1",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"},
            {"from": "gpt", "value": "A dog."},
        ],
    }
    out = processor(sample, [image()])
    assert [end - start for start, end in runs(out["input_ids"] == MEDIA_ID)] == [1 + 4]
    assert out["pixel_values"].shape == (1, 3, 224, 224)


def test_pad_to_square_applies_to_images_only(make_processor):
    processor = make_processor(pad_to_square=True)
    media = [image(seed=4), video(1, seed=5, height=10, width=30)]
    sample = {
        "id": "pad",
        "conversations": [{"from": "human", "value": "<image> <video>"}, {"from": "gpt", "value": "ok"}],
    }
    out = processor(sample, media)
    torch.testing.assert_close(out["pixel_values"][0], clip_pixels(media[0].frames, pad_to_square=True)[0])
    torch.testing.assert_close(out["pixel_values"][1], clip_pixels(media[1].frames)[0])


ERROR_CASES = {
    "more placeholders than media": (
        [{"from": "human", "value": "<video> then <video>"}, {"from": "gpt", "value": "ok"}],
        lambda: [video(1)],
        {},
        "more placeholders than media",
    ),
    "unused media": (
        [{"from": "human", "value": "<video>"}, {"from": "gpt", "value": "ok"}],
        lambda: [video(1), video(1)],
        {},
        "1 media unused",
    ),
    "zero frames": (
        [{"from": "human", "value": "<video>"}, {"from": "gpt", "value": "ok"}],
        lambda: [Media(np.zeros((0, 8, 8, 3), dtype=np.uint8), True)],
        {},
        "zero frames",
    ),
    "too many frames": (
        [{"from": "human", "value": "<video>"}, {"from": "gpt", "value": "ok"}],
        lambda: [video(5)],
        {"max_frames": 4},
        "5 frames, more than max_frames=4",
    ),
    "over max length": (
        [{"from": "human", "value": "<video> describe"}, {"from": "gpt", "value": "ok"}],
        lambda: [video(10)],
        {"max_length": 50},
        r"\d+ tokens after media expansion exceed max_length=50",
    ),
    "kind mismatch": (
        [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "ok"}],
        lambda: [video(2)],
        {},
        "<image>.*which is a video",
    ),
    "image with several frames": (
        [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "ok"}],
        lambda: [Media(np.zeros((2, 8, 8, 3), dtype=np.uint8), False)],
        {},
        "is an image but has 2 frames",
    ),
    "gpt first": (
        [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "<video>"}],
        lambda: [video(1)],
        {},
        "alternate human/gpt starting with human",
    ),
    "two human turns": (
        [{"from": "human", "value": "<video>"}, {"from": "human", "value": "again"}],
        lambda: [video(1)],
        {},
        "alternate human/gpt",
    ),
    "unknown from": (
        [{"from": "system", "value": "x"}, {"from": "gpt", "value": "ok"}],
        lambda: [],
        {},
        "unknown 'from' 'system'",
    ),
    "ends with human": (
        [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "ok"}, {"from": "human", "value": "?"}],
        lambda: [],
        {},
        "last turn must be from 'gpt'",
    ),
    "reserved token in text": (
        [{"from": "human", "value": "<media> hi"}, {"from": "gpt", "value": "ok"}],
        lambda: [],
        {},
        "reserved token <media>",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_name_the_sample(make_processor, case):
    conversations, media, kwargs, message = ERROR_CASES[case]
    processor = make_processor(**kwargs)
    with pytest.raises(ValueError, match=rf"sample bad-sample-7: .*{message}"):
        processor({"id": "bad-sample-7", "conversations": conversations}, media())


def test_media_token_is_added_when_missing(llama_tokenizer_dir, bert_tokenizer):
    tokenizer = AutoTokenizer.from_pretrained(llama_tokenizer_dir)
    assert "<media>" not in tokenizer.get_added_vocab()
    processor = BehaviorLlavaProcessor.from_config(tokenizer, bert_tokenizer, BehaviorLlavaConfig())
    assert processor.tokenizer.convert_tokens_to_ids("<media>") == MEDIA_ID
    assert processor.tokenizer.tokenize("a<media>b").count("<media>") == 1


def test_media_token_id_mismatch_is_an_error(llama_tokenizer, bert_tokenizer):
    with pytest.raises(ValueError, match="media_token_id"):
        BehaviorLlavaProcessor.from_config(
            llama_tokenizer, bert_tokenizer, BehaviorLlavaConfig(media_token_id=32005)
        )


def test_unknown_template_lists_valid_ones(make_processor):
    with pytest.raises(
        ValueError, match=r"unknown conversation template 'llama_2'.*\['plain', 'vicuna_v1'\]"
    ):
        make_processor(template="llama_2")


def test_vicuna_template_render():
    template = get_template("vicuna_v1")
    assert template is TEMPLATES["vicuna_v1"] and template.sep == " " and template.sep2 == "</s>"
    rendered = template.render(["q1", "a1", "q2", "a2"], system="SYS")
    assert rendered.text == "SYS USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>"
    # LLaVA supervises everything after "ASSISTANT:", the space included
    assert [rendered.text[s:e] for s, e in rendered.supervised_spans] == [" a1</s>", " a2</s>"]
    assert [rendered.text[s : s + 2] for s in rendered.answer_starts] == ["a1", "a2"]
    assert template.render(["q1"]).text == f"{SYSTEM} USER: q1 ASSISTANT:"
    # LLaVA writes an empty message as its role alone, without a separator; nothing of it is supervised
    empty = template.render(["q1", "", "q2", "a2"], system="SYS")
    assert empty.text == "SYS USER: q1 ASSISTANT:USER: q2 ASSISTANT: a2</s>"
    assert [empty.text[s:e] for s, e in empty.supervised_spans] == [" a2</s>"]
    assert [empty.text[s : s + 2] for s in empty.answer_starts] == ["US", "a2"]
    plain = get_template("plain").render(["<media>\nDescribe.", "A car."])
    assert plain.text == "<media>A car.\n" and [plain.text[s:e] for s, e in plain.supervised_spans] == [
        "A car.\n"
    ]


def test_system_override(make_processor):
    processor = make_processor()
    sample = {
        "id": "sys",
        "system": "Be terse.",
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}],
    }
    out = processor(sample, [])
    assert processor.tokenizer.decode(out["input_ids"][1:]) == "Be terse. USER: Hi ASSISTANT: Hello.</s>"
    assert out["pixel_values"].shape == (0, 3, 224, 224)
    assert out["query_input_ids"].shape[0] == 0 and out["media_frame_counts"].numel() == 0


def test_plain_template_labels(make_processor):
    processor = make_processor(template="plain")
    sample = {
        "id": "pt-1",
        "conversations": [
            {"from": "human", "value": "<video>\nDescribe the clip briefly."},
            {"from": "gpt", "value": "A red car drives by."},
        ],
    }
    out = processor(sample, [video(2)])
    ids, labels = out["input_ids"], out["labels"]
    assert ids[0] == 1 and (ids[1:5] == MEDIA_ID).all() and ids[5] != MEDIA_ID
    supervised = labels != IGNORE_INDEX
    assert not supervised[:5].any() and supervised[5:].all()
    assert processor.tokenizer.decode(labels[5:]) == "A red car drives by.\n"
    query = out["query_input_ids"][0][out["query_attention_mask"][0].bool()]
    assert processor.qformer_tokenizer.decode(query, skip_special_tokens=True) == "describe the clip briefly."


def test_generation_prompt(make_processor):
    processor = make_processor()
    out = processor.prompt_for_generation("<video>\nWhat happens?", [video(2)])
    assert "labels" not in out
    assert (
        processor.tokenizer.decode(collapse_media(out["input_ids"])[1:])
        == f"{SYSTEM} USER: <media> \nWhat happens? ASSISTANT:"  # "▁" after the placeholder
    )
    assert (out["input_ids"] == MEDIA_ID).sum() == 4 and out["pixel_values"].shape == (2, 3, 224, 224)
    assert (
        processor.qformer_tokenizer.decode(out["query_input_ids"][0], skip_special_tokens=True)
        == "what happens?"
    )
    with pytest.raises(ValueError, match=r"generation prompt.*unused"):
        processor.prompt_for_generation("no placeholder", [video(1)])


def test_collate(make_processor):
    processor = make_processor()
    short = processor(
        {
            "id": "a",
            "conversations": [{"from": "human", "value": "<video> Hi"}, {"from": "gpt", "value": "Yes."}],
        },
        [video(2)],
    )
    long = processor(
        three_turn_sample()
        | {
            "conversations": [
                {
                    "from": "human",
                    "value": "<video>\nFirst, a much longer question about what is going on here?",
                },
                {"from": "gpt", "value": "A long answer."},
                {"from": "human", "value": "<image> and this?"},
                {"from": "gpt", "value": "A picture."},
            ]
        },
        [video(1, seed=7), image(seed=8)],
    )
    batch = processor.collate([short, long])
    lengths = [short["input_ids"].numel(), long["input_ids"].numel()]
    assert lengths[0] < lengths[1]
    length = max(lengths)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["labels"].shape == (2, length)
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert torch.equal(batch["input_ids"][0, : lengths[0]], short["input_ids"])
    assert (batch["input_ids"][0, lengths[0] :] == 0).all()  # unk: the LLaMA tokenizer has no pad
    assert torch.equal(batch["labels"][0, : lengths[0]], short["labels"])
    assert (batch["labels"][0, lengths[0] :] == IGNORE_INDEX).all()
    assert torch.equal(batch["input_ids"][1], long["input_ids"]) and torch.equal(
        batch["labels"][1], long["labels"]
    )
    assert torch.equal(batch["pixel_values"], torch.cat([short["pixel_values"], long["pixel_values"]]))
    assert batch["pixel_values"].shape == (4, 3, 224, 224)
    assert batch["media_frame_counts"].tolist() == [2, 1, 1]
    assert batch["media_is_video"].tolist() == [True, True, False]
    assert batch["query_media_index"].tolist() == [0, 1, 2]
    query_lengths = [short["query_input_ids"].shape[1], long["query_input_ids"].shape[1]]
    assert query_lengths[0] < query_lengths[1]
    assert batch["query_input_ids"].shape == batch["query_attention_mask"].shape == (3, query_lengths[1])
    assert torch.equal(batch["query_input_ids"][0, : query_lengths[0]], short["query_input_ids"][0])
    assert (batch["query_input_ids"][0, query_lengths[0] :] == 0).all()
    assert (batch["query_attention_mask"][0, query_lengths[0] :] == 0).all()
    assert torch.equal(batch["query_input_ids"][1:], long["query_input_ids"])
    assert "labels" not in processor.collate([processor.prompt_for_generation("<video>", [video(1)])])


def test_save_load_round_trip(make_processor, tmp_path):
    """transformers' processor layout; the loaded processor needs no model config and encodes the same."""
    config = BehaviorLlavaConfig(image_compress="grid:2", qformer_max_length=12)
    processor = make_processor(config, max_length=1000, max_frames=8, pad_to_square=False)
    processor.save_pretrained(tmp_path)
    assert {
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "qformer_tokenizer",
        "processing.py",
    } <= {p.name for p in tmp_path.iterdir()}
    assert not (tmp_path / "tokenizer").exists()
    loaded = BehaviorLlavaProcessor.from_pretrained(tmp_path)
    assert (loaded.template, loaded.max_length, loaded.max_frames, loaded.image_processor.pad_to_square) == (
        "vicuna_v1",
        1000,
        8,
        False,
    )
    assert (loaded.image_tokens, loaded.video_frame_tokens, loaded.qformer_max_length) == (
        config.media_tokens(1, False),
        config.media_tokens(1, True),
        12,
    )
    loaded.check_config(config)
    assert loaded.qformer_tokenizer.truncation_side == "left" and len(loaded.qformer_tokenizer) == 30523
    assert loaded.chat_template == processor.chat_template
    sample = three_turn_sample()
    sample["conversations"][2]["value"] = "<image> why so fast?"
    media = [video(3, seed=1), image(seed=9), video(2, seed=2)]
    expected, actual = processor(sample, media), loaded(sample, media)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    overridden = BehaviorLlavaProcessor.from_pretrained(tmp_path, max_length=7, preprocess="llamavid")
    assert (overridden.max_length, overridden.preprocess, overridden.max_frames) == (7, "llamavid", 8)
    assert "max_length" not in overridden.tokenizer.init_kwargs  # settings do not leak into the tokenizer


def test_check_config_names_each_mismatch(make_processor):
    processor = make_processor(BehaviorLlavaConfig())
    processor.check_config(BehaviorLlavaConfig())
    with pytest.raises(ValueError, match=r"video_frame_tokens: processor 2, model 5.*qformer_max_length"):
        processor.check_config(BehaviorLlavaConfig(video_compress="grid:2", qformer_max_length=9))


def test_old_layout_is_an_error_whose_recipe_resaves_it(llama_tokenizer, bert_tokenizer, tmp_path):
    """A processor bl-model saved before it was a ProcessorMixin: the error's re-save recipe, run as written, gives
    a processor that loads from the model folder and encodes as one built from the same parts."""
    final = tmp_path / "final"
    config = BehaviorLlavaConfig(video_compress="grid:2")
    config.save_pretrained(final)
    old = final / "processor"
    llama_tokenizer.save_pretrained(old / "tokenizer")
    bert_tokenizer.save_pretrained(old / "qformer_tokenizer")
    settings = {
        "template": "vicuna_v1",
        "max_length": 900,
        "max_frames": 6,
        "pad_to_square": False,
        "preprocess": "as_written",
    }
    (old / "processor_config.json").write_text(json.dumps(settings))
    for path in (final, old):
        with pytest.raises(ValueError, match=r"(?s)older bl-model.*re-save") as error:
            BehaviorLlavaProcessor.from_pretrained(path)
    recipe = str(error.value).split("\n", 1)[1].replace("MODEL", repr(str(final)))
    exec(textwrap.dedent(recipe), {})
    resaved = BehaviorLlavaProcessor.from_pretrained(final)
    resaved.check_config(config)
    built = BehaviorLlavaProcessor.from_config(llama_tokenizer, bert_tokenizer, config, **settings)
    assert (resaved.max_length, resaved.max_frames, resaved.image_processor.pad_to_square) == (900, 6, False)
    sample = three_turn_sample()
    media = [video(3, seed=1), video(2, seed=2)]
    expected, actual = built(sample, media), resaved(sample, media)
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def chat(messages: list[str], system: str | None = None) -> list[dict]:
    """`messages` (alternating user/assistant, `<image>` / `<video>` at the front of a user turn) as chat messages
    with content parts."""
    out = [{"role": "system", "content": system}] if system is not None else []
    for i, text in enumerate(messages):
        if i % 2:
            out.append({"role": "assistant", "content": text})
            continue
        parts = []
        while text.startswith(("<image>\n", "<video>\n")):
            parts.append({"type": text[1:6]})
            text = text[8:]
        out.append({"role": "user", "content": [*parts, {"type": "text", "text": text}]})
    return out


@pytest.mark.parametrize(
    "messages, system",
    [
        (["<video>\nWhat happens in the video?"], None),  # the generation prompt
        (["<video>\nWhat happens?", ANSWERS[0], "Why so fast?", ANSWERS[1]], None),  # multi-turn, closed
        (["<image>\nDescribe.", ANSWERS[2], "<video>\n<image>\nAnd these?  "], "Be brief."),  # system, open
        (["plain text, no media", " spaced answer "], ""),  # empty system
        (["<video>\nWhat happens?", "", "And now?", ANSWERS[1]], None),  # an empty answer
    ],
)
def test_chat_template_renders_what_the_vicuna_v1_template_renders(
    make_processor, tmp_path, messages, system
):
    processor = make_processor()
    expected = get_template("vicuna_v1").render(messages, system).text
    open_turn = len(messages) % 2 == 1
    assert processor.apply_chat_template(chat(messages, system), add_generation_prompt=open_turn) == expected
    processor.save_pretrained(tmp_path)
    loaded = BehaviorLlavaProcessor.from_pretrained(tmp_path)  # the template travels as chat_template.jinja
    assert (tmp_path / "chat_template.jinja").read_text() == processor.chat_template
    assert loaded.apply_chat_template(chat(messages, system), add_generation_prompt=open_turn) == expected
    plain_strings = [{**m, "content": m["content"][-1]["text"]} for m in chat(messages[-1:])]
    assert processor.apply_chat_template(plain_strings).endswith(f"USER: {messages[-1].split(chr(10))[-1]} ")


def test_chat_template_errors(make_processor):
    processor = make_processor()
    with pytest.raises(Exception, match="roles must alternate"):
        processor.apply_chat_template([{"role": "assistant", "content": "hi"}])
    with pytest.raises(Exception, match="unknown content type audio"):
        processor.apply_chat_template([{"role": "user", "content": [{"type": "audio"}]}])
    with pytest.raises(ValueError, match="renders text only"):
        processor.apply_chat_template(chat(["hi"]), tokenize=True)
