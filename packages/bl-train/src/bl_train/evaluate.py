"""The paper's behaviour metrics on held-out BLIFT shards, tracked while training.

likes/views R² (from the generated "liked by X% of viewers"), perplexity on the gold top comments
(teacher-forced, only the comment characters labelled), and replay RMSE / ±5 accuracy (matched by scene number,
on 0-100). Decoding is `bl_model.inference`'s, the metrics are `bl_data.behavior_metrics`' (those of bl-eval's
behaviour tasks); NaN where a metric has no data.
"""

from __future__ import annotations

import torch

from bl_data.behavior_metrics import comment_perplexity, likes_r2, replay_prediction, replay_scores
from bl_data.parse import BehaviorParseError, comment_spans, parse_behavior
from bl_data.shards import ShardIndex
from bl_model import BehaviorLlavaForCausalLM, BehaviorLlavaProcessor, Media
from bl_model.inference import generate_texts, label_nll


@torch.no_grad()
def evaluate_behavior(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    heldout: ShardIndex,
    num_samples: int,
    max_new_tokens: int = 256,
    batch_size: int = 4,
) -> dict[str, float | int]:
    """-> {likes_r2, comment_ppl, replay_rmse, replay_accuracy, replay_missing, replay_extra, replay_repeated,
    samples, parsed} over the first `num_samples` held-out samples.

    Under torch.distributed every rank must call it: rank r scores samples r, r + world, ... with its own model
    replica and the per-sample records are gathered, so all ranks finish together and return the same numbers.
    """
    rank, world = (
        (torch.distributed.get_rank(), torch.distributed.get_world_size())
        if torch.distributed.is_initialized()
        else (0, 1)
    )
    n = min(num_samples, len(heldout))
    records = _score(model, processor, heldout, range(rank, n, world), max_new_tokens, batch_size)
    if world > 1:
        gathered: list[list[dict] | None] = [None] * world
        torch.distributed.all_gather_object(gathered, records)
        records = [r for part in gathered for r in part]
    records.sort(key=lambda r: r["index"])  # sample order, whatever the rank
    likes = [r for r in records if r["likes_gold"] is not None]
    replays = [r for r in records if r["replay_gold"]]
    replay = replay_scores([r["replay_pred"] for r in replays], [r["replay_gold"] for r in replays])
    return {
        "likes_r2": likes_r2([r["likes_pred"] for r in likes], [r["likes_gold"] for r in likes])["r2"],
        "comment_ppl": comment_perplexity([r["nll"] for r in records])["perplexity"],
        "replay_rmse": replay["rmse"],
        "replay_accuracy": replay["accuracy"],
        "replay_missing": replay["missing"],
        "replay_extra": replay["extra"],
        "replay_repeated": replay["repeated"],
        "samples": n,
        "parsed": sum(r["parsed"] for r in records),
    }


def _score(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    heldout: ShardIndex,
    indices: range,
    max_new_tokens: int,
    batch_size: int,
) -> list[dict]:
    """One record per sample of `indices`: comment NLL, parsed likes / replay predictions and their golds."""
    was_training = model.training
    model.eval()
    records, prompts = [], []
    for index in indices:
        sample, frames = heldout[index]
        human = sample["conversations"][0]["value"]
        media = [Media.for_placeholder(human, frames)]
        nll = None
        if comment_spans(sample["conversations"][1]["value"]):
            total, tokens = label_nll(model, processor, processor(sample, media, supervise=comment_spans))
            nll = {"nll": total, "tokens": tokens}
        prompts.append(processor.prompt_for_generation(human, media, system=sample.get("system")))
        gold = sample["behavior"]
        records.append(
            {
                "index": index,
                "nll": nll,
                "likes_gold": gold.get("likes_percent"),
                "replay_gold": gold.get("replay"),
            }
        )
    answers = generate_texts(model, processor, prompts, max_new_tokens, batch_size)
    for record, answer in zip(records, answers, strict=True):
        try:
            behavior = parse_behavior(answer)
        except BehaviorParseError:
            behavior = None
        record["parsed"] = behavior is not None
        record["likes_pred"] = None if behavior is None else behavior.likes_percent
        record["replay_pred"] = replay_prediction(behavior)
    model.train(was_training)
    return records
