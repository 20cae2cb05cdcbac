"""Inference: load a model + processor, batched generation with the KV cache, label log-likelihoods.

    model, processor = load("runs/demo/final", device="cuda", dtype=torch.bfloat16)
    prompts = [processor.prompt_for_generation(text, media) for text, media in requests]
    answers = generate_texts(model, processor, prompts, max_new_tokens=256)            # greedy
    answers = generate_texts(model, processor, prompts, 256, sampling=Sampling(temperature=0.7, top_p=0.9))
    sums, counts = continuation_logprobs(model, processor, "<image>\\nWhat colour?", media, ["red", "blue"])

This is the one place that loads checkpoints for inference and decodes: bl-eval's protocols, the trainer's
behaviour eval, behaviour simulation and the lmms-eval adapter all call it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .configuration import IGNORE_INDEX
from .modeling import BehaviorLlavaForCausalLM, MediaBatch
from .processing import PROCESSOR_CONFIG_NAME, BehaviorLlavaProcessor, Media, reject_old_layout

ADAPTER_CONFIG = "adapter_config.json"  # marks a peft LoRA adapter folder (bl-train's final-adapter/)


@dataclass(frozen=True)
class Sampling:
    """Sampled decoding (transformers' `generate` arguments); seed with `torch.manual_seed` for repeatability."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(f"need temperature > 0, 0 < top_p <= 1, top_k >= 0; got {self}")


def load(
    model_path: str | Path,
    processor_path: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = "auto",
) -> tuple[BehaviorLlavaForCausalLM, BehaviorLlavaProcessor]:
    """The model of `model_path` (config.json + weights, or a LoRA adapter folder: merged into its base) in eval
    mode on `device` (default: cuda if available) in `dtype` ("auto": as saved), and its processor (`processor_path`, default `model_path`: transformers' layout,
    processor files beside the weights), checked against the model config."""
    processor_dir = Path(processor_path or model_path)
    reject_old_layout(processor_dir)
    if not (processor_dir / PROCESSOR_CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"no processor at {processor_dir} (no {PROCESSOR_CONFIG_NAME}); give its directory (--processor DIR)"
        )
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if (Path(model_path) / ADAPTER_CONFIG).is_file():
        model = load_merged_adapter(Path(model_path), dtype).to(device).eval()
    else:
        model = BehaviorLlavaForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
    processor = BehaviorLlavaProcessor.from_pretrained(processor_dir)
    processor.check_config(model.config)
    return model, processor


def load_merged_adapter(
    adapter_dir: str | Path, dtype: torch.dtype | str = "auto"
) -> BehaviorLlavaForCausalLM:
    """A LoRA adapter folder (bl-train's `final-adapter/`, peft's layout) merged into the base it names (loaded
    unquantized in `dtype`); FileNotFoundError naming both when the base is gone. Needs peft."""
    adapter_dir = Path(adapter_dir)
    try:
        import peft
    except ModuleNotFoundError as err:
        raise ImportError(
            f"{adapter_dir} is a LoRA adapter folder; loading it needs peft (bl-model[peft])"
        ) from err
    config = adapter_dir / ADAPTER_CONFIG
    base = Path(json.loads(config.read_text())["base_model_name_or_path"])
    if not (base / "config.json").is_file():
        raise FileNotFoundError(
            f"{config}: base_model_name_or_path {base} is not a model folder (moved or deleted?)"
        )
    model = BehaviorLlavaForCausalLM.from_pretrained(base, dtype=dtype)
    return peft.PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def generate_ids(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    encoded: Sequence[dict[str, torch.Tensor]],
    max_new_tokens: int,
    batch_size: int = 8,
    sampling: Sampling | None = None,
) -> list[list[int]]:
    """New token ids of encoded prompts (`prompt_for_generation` outputs), `batch_size` at a time, left-padded,
    greedy unless `sampling`; each row is cut before its first "</s>"."""
    eos = processor.tokenizer.eos_token_id
    options = {"do_sample": False}
    if sampling is not None:
        options = {
            "do_sample": True,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
        }
    rows = []
    for start in range(0, len(encoded), batch_size):
        prompts = encoded[start : start + batch_size]
        batch = to_device(processor.collate(prompts, padding_side="left"), model.device)
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=processor.pad_token_id,
            **options,
        ).cpu()  # (B, L + ≤ max_new_tokens): the prompts, then the new tokens
        new = out[:, batch["input_ids"].shape[1] :]  # (B, ≤ max_new_tokens)
        rows += [row[: row.index(eos)] if eos in row else row for row in new.tolist()]
    return rows


def generate_texts(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    encoded: Sequence[dict[str, torch.Tensor]],
    max_new_tokens: int,
    batch_size: int = 8,
    sampling: Sampling | None = None,
) -> list[str]:
    """`generate_ids`, decoded without special tokens and stripped."""
    rows = generate_ids(model, processor, encoded, max_new_tokens, batch_size, sampling)
    return [processor.tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]


# ---- log-likelihoods ------------------------------------------------------------------------------------
def stand_in(media: Sequence[Media]) -> list[Media]:
    """1x1 black media with the same frame counts: they give the same token layout, cheaply."""
    return [
        Media(
            np.zeros((m.num_frames, 1, 1, 3), np.uint8) if m.is_video else np.zeros((1, 1, 3), np.uint8),
            m.is_video,
        )
        for m in media
    ]


class ContinuationScores(NamedTuple):
    """Per continuation (C,): summed log-probability, token count, and whether greedy decoding gives it."""

    logprobs: torch.Tensor
    tokens: torch.Tensor
    greedy: torch.Tensor


def _whole_answer(text: str) -> list[tuple[int, int]]:
    return [(0, len(text))]


@torch.no_grad()
def continuation_logprobs(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    prompt: str,
    media: Sequence[Media],
    continuations: Sequence[str],
    *,
    system: str | None = None,
    batch_size: int = 8,
) -> ContinuationScores:
    """Summed log-probabilities (C,), token counts (C,) and greedy flags (C,) of each continuation as the
    assistant's answer (teacher-forced after the generation prompt).

    A continuation's tokens are all those after the generation prompt up to the end of its text (a lone
    "▁" the tokenizer splits off counts; the closing "</s>" does not). The media are encoded once and
    shared by all C rows; rows run `batch_size` at a time, right-padded.
    """
    if not continuations:
        raise ValueError("no continuations to score")
    device = model.device
    prompt_ids = processor.prompt_for_generation(prompt, stand_in(media), system=system)["input_ids"]  # (P,)
    start = prompt_ids.numel()
    encoded = []
    for i, text in enumerate(continuations):
        sample = {
            "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": text}],
            "system": system,
        }
        e = processor(sample, media if i == 0 else stand_in(media), supervise=_whole_answer)
        ids = e["input_ids"]  # (L,)
        if not torch.equal(ids[:start], prompt_ids):
            raise ValueError(f"the tokens of answer {text!r} do not start where the generation prompt ends")
        answer = (e["labels"] != IGNORE_INDEX).nonzero()  # (a, 1) positions of the answer's characters
        end = int(answer.max()) + 1 if answer.numel() else start
        if end <= start:
            raise ValueError(f"answer {text!r} has no tokens")
        e["labels"] = torch.full_like(ids, IGNORE_INDEX)
        e["labels"][start:end] = ids[start:end]
        encoded.append(e)
    media_embeds = None
    if encoded[0]["media_frame_counts"].numel():
        media_embeds = model.encode_media(MediaBatch.pop_from(to_device(dict(encoded[0]), device)))  # (n, H)
    sums, counts, greedy = [], [], []
    for first in range(0, len(encoded), batch_size):
        batch = to_device(processor.collate(encoded[first : first + batch_size]), device)
        ids, labels = batch["input_ids"], batch["labels"]  # (B, L)
        is_media = ids == model.config.media_token_id  # (B, L)
        embeds = model.get_input_embeddings()(ids.masked_fill(is_media, 0))  # (B, L, H)
        if media_embeds is not None:
            embeds = embeds.masked_scatter(
                is_media[..., None], media_embeds.repeat(ids.shape[0], 1).to(embeds.dtype)
            )
        positions = torch.arange(start - 1, ids.shape[1] - 1, device=device)  # (A,): logits[t] predict t + 1
        logits = model(
            inputs_embeds=embeds, attention_mask=batch["attention_mask"], logits_to_keep=positions
        ).logits
        targets = labels[:, start:]  # (B, A)
        keep = targets != IGNORE_INDEX
        token_lp = torch.log_softmax(logits.float(), -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        sums.append((token_lp * keep).sum(1).cpu())
        counts.append(keep.sum(1).cpu())
        greedy.append(((logits.argmax(-1) == targets) | ~keep).all(1).cpu())  # (B,)
    return ContinuationScores(torch.cat(sums), torch.cat(counts), torch.cat(greedy))


def label_nll(
    model: BehaviorLlavaForCausalLM, processor: BehaviorLlavaProcessor, encoded: dict[str, torch.Tensor]
) -> tuple[float, int]:
    """Summed NLL and count of one processed sample's labelled tokens (`processor(sample, media, supervise)`)."""
    return model.label_nll(**to_device(processor.collate([encoded]), model.device))
