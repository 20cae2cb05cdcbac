"""The embedded demo: synthetic media -> bl-data shards, instruction images, tokenizers trained on the demo
text with `tokenizers` (no hub), and a tiny model initialised for them. Built once under `root`."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import SentencePieceBPETokenizer, processors
from tokenizers.implementations import BertWordPieceTokenizer
from transformers import PreTrainedTokenizerFast

import bl_model
from bl_data.demo import synthesize_youtube
from bl_data.pipeline import PrepareConfig, prepare
from bl_data.shards import open_shards
from bl_model import BehaviorLlavaForCausalLM, BehaviorLlavaProcessor

logger = logging.getLogger(__name__)
# what READY holds: a demo folder written by an older bl-train (another text) gets its processor and model rebuilt
DEMO_FORMAT = "demo data, format 2: the processor in transformers' layout\n"

_COLOURS = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (50, 60, 210), "yellow": (230, 200, 40)}
_SHAPES = ("square", "circle")


def _instruction_images(root: Path, n: int, seed: int) -> list[dict]:
    """LLaMA-VID-format image QA: a coloured shape on grey; the answer names its colour and shape."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        colour, shape = list(_COLOURS)[i % 4], _SHAPES[(i // 4) % 2]
        image = np.full((64, 64, 3), 128, np.uint8)
        yy, xx = np.mgrid[:64, :64]
        cy, cx = rng.integers(20, 44, size=2)
        inside = (
            (np.abs(yy - cy) < 12) & (np.abs(xx - cx) < 12)
            if shape == "square"
            else (yy - cy) ** 2 + (xx - cx) ** 2 < 144
        )
        image[inside] = _COLOURS[colour]
        name = f"images/shape{i:03d}.png"
        Image.fromarray(image).save(root / name)
        entries.append(
            {
                "id": f"shape{i:03d}",
                "image": name,
                "conversations": [
                    {
                        "from": "human",
                        "value": "<image>\nWhat is the colour and the shape of the object in this image?",
                    },
                    {"from": "gpt", "value": f"The object is a {colour} {shape}."},
                ],
            }
        )
    return entries


def _corpus(shard_dirs: list[Path], instructions: list[dict]) -> list[str]:
    texts = [bl_model.conversation.get_template("vicuna_v1").system]
    for directory in shard_dirs:
        for sample in open_shards(directory, split_by_node=False, split_by_worker=False, decode_frames=False):
            meta = sample["json"]
            texts += [turn["value"] for turn in meta["conversations"] + meta["control_conversations"]]
            texts.append(meta["system"])
    texts += [turn["value"] for entry in instructions for turn in entry["conversations"]]
    return [*texts, "USER: ASSISTANT:"]


def _llama_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = SentencePieceBPETokenizer()
    tok.train_from_iterator(
        corpus, vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )


def _bert_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(corpus, vocab_size=vocab_size, show_progress=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def build_demo_data(
    root: str | Path, *, n_train: int = 24, n_heldout: int = 6, n_images: int = 24, seed: int = 0
) -> Path:
    """Build (once) everything the `demo` recipe reads under `root`; returns `root`."""
    root = Path(root)
    ready = root / "READY"
    if ready.exists():
        if ready.read_text() == DEMO_FORMAT:
            return root
        logger.info("%s was built by an older bl-train: rebuilding its processor and model", root)
        ready.unlink()
        shutil.rmtree(root / "processor", ignore_errors=True)
    for name, n, s in (("shards", n_train, seed), ("heldout", n_heldout, seed + 1)):
        download = synthesize_youtube(root / "download" / name, n, seed=s)
        prepare(
            PrepareConfig(
                source="youtube", input=download, out=root / name, samples_per_shard=8, max_side=128
            )
        )
    instructions = _instruction_images(root, n_images, seed)
    (root / "instructions.json").write_text(json.dumps(instructions, indent=1))

    corpus = _corpus([root / "shards", root / "heldout"], instructions)
    tokenizer, qformer_tokenizer = _llama_tokenizer(corpus, 1500), _bert_tokenizer(corpus, 800)
    config = bl_model.tiny(media_token_id=len(tokenizer))
    config.text_config.vocab_size = len(tokenizer)
    config.text_config.pad_token_id = tokenizer.pad_token_id
    config.qformer_config.vocab_size = len(qformer_tokenizer) + 1  # + "[DEC]"
    processor = BehaviorLlavaProcessor.from_config(tokenizer, qformer_tokenizer, config)
    processor.save_pretrained(root / "processor")
    torch.manual_seed(seed)  # the same demo checkpoint on every machine
    BehaviorLlavaForCausalLM(config).save_pretrained(root / "model")
    ready.write_text(DEMO_FORMAT)
    return root


def wait_for_demo_data(root: str | Path, timeout_s: float = 1800.0) -> None:
    """For ranks > 0: wait until rank 0's `build_demo_data(root)` has finished."""
    deadline = time.monotonic() + timeout_s
    ready = Path(root) / "READY"
    while not (ready.exists() and ready.read_text() == DEMO_FORMAT):
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo data under {root} not ready after {timeout_s:.0f} s (rank 0 builds it)")
        time.sleep(1.0)
