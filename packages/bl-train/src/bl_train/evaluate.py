"""The paper's behaviour metrics on held-out BLIFT shards, tracked while training.

likes/views R² (from the generated "liked by X% of viewers"), perplexity on the gold top comments
(teacher-forced, only the comment characters labelled), and replay RMSE (generated vs gold per scene).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bl_data.parse import BehaviorParseError, comment_spans, parse_behavior
from bl_data.shards import ShardIndex
from bl_model import BehaviorLlavaForCausalLM, BehaviorLlavaProcessor, Media


def r2(pred: list[float], gold: list[float]) -> float | None:
    """Coefficient of determination 1 - SS_res / SS_tot; None with < 2 points or constant gold."""
    if len(gold) < 2:
        return None
    p, g = np.asarray(pred, float), np.asarray(gold, float)
    ss_tot = float(((g - g.mean()) ** 2).sum())
    return None if ss_tot == 0 else 1.0 - float(((g - p) ** 2).sum()) / ss_tot


def _batch(processor: BehaviorLlavaProcessor, inputs: dict[str, torch.Tensor], device: torch.device) -> dict:
    """One processed sample -> a collated batch of one on `device`."""
    return {k: v.to(device) for k, v in processor.collate([inputs]).items()}


@torch.no_grad()
def evaluate_behavior(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    heldout: ShardIndex,
    num_samples: int,
    max_new_tokens: int = 256,
) -> dict[str, float | int | None]:
    """-> {likes_r2, comment_ppl, replay_rmse, samples, parsed}; None where a metric has no data.

    Under torch.distributed every rank must call it: rank r scores samples r, r + world, ... with its own model
    replica and the partial sums are gathered, so all ranks finish together and return the same numbers.
    """
    rank, world = (
        (torch.distributed.get_rank(), torch.distributed.get_world_size())
        if torch.distributed.is_initialized()
        else (0, 1)
    )
    n = min(num_samples, len(heldout))
    parts = [_partial(model, processor, heldout, range(rank, n, world), max_new_tokens)]
    if world > 1:
        gathered: list[dict | None] = [None] * world
        torch.distributed.all_gather_object(gathered, parts[0])
        parts = gathered
    merged = {k: sum((p[k] for p in parts), type(parts[0][k])()) for k in parts[0]}
    likes = sorted(merged["likes"])  # (index, pred, gold), in sample order whatever the rank
    return {
        "likes_r2": r2([p for _, p, _ in likes], [g for _, _, g in likes]),
        "comment_ppl": math.exp(merged["nll"] / merged["tokens"]) if merged["tokens"] else None,
        "replay_rmse": math.sqrt(sum(merged["replay"]) / len(merged["replay"])) if merged["replay"] else None,
        "samples": n,
        "parsed": merged["parsed"],
    }


def _partial(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    heldout: ShardIndex,
    indices: range,
    max_new_tokens: int,
) -> dict[str, list | float | int]:
    """Sums over `indices`: comment NLL and tokens, squared replay errors, (index, pred, gold) likes, parsed."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    likes, replay_err, nll, tokens, parsed = [], [], 0.0, 0, 0
    for index in indices:
        sample, frames = heldout[index]
        human = sample["conversations"][0]["value"]
        media = [Media.for_placeholder(human, frames)]
        gold = sample["behavior"]
        if comment_spans(sample["conversations"][1]["value"]):
            sample_nll, sample_tokens = model.label_nll(
                **_batch(processor, processor(sample, media, supervise=comment_spans), device)
            )
            nll, tokens = nll + sample_nll, tokens + sample_tokens
        prompt = _batch(
            processor, processor.prompt_for_generation(human, media, system=sample.get("system")), device
        )
        new = model.generate(
            **prompt, max_new_tokens=max_new_tokens, eos_token_id=processor.tokenizer.eos_token_id
        )
        try:
            answer = parse_behavior(processor.tokenizer.decode(new[0], skip_special_tokens=True))
        except BehaviorParseError:
            continue
        parsed += 1
        if answer.likes_percent is not None and gold.get("likes_percent") is not None:
            likes.append((index, answer.likes_percent, gold["likes_percent"]))
        if answer.replay and gold.get("replay"):
            replay_err += [(a - b) ** 2 for a, b in zip(answer.replay, gold["replay"], strict=False)]
    model.train(was_training)
    return {"likes": likes, "replay": replay_err, "nll": nll, "tokens": tokens, "parsed": parsed}
