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
    samples, parsed} over the first `num_samples` held-out samples."""
    was_training = model.training
    model.eval()
    likes_pred, likes_gold, replay_pred, replay_gold, nll, prompts = [], [], [], [], [], []
    golds = []
    n = min(num_samples, len(heldout))
    for index in range(n):
        sample, frames = heldout[index]
        human = sample["conversations"][0]["value"]
        media = [Media.for_placeholder(human, frames)]
        if comment_spans(sample["conversations"][1]["value"]):
            total, tokens = label_nll(model, processor, processor(sample, media, supervise=comment_spans))
            nll.append({"nll": total, "tokens": tokens})
        prompts.append(processor.prompt_for_generation(human, media, system=sample.get("system")))
        golds.append(sample["behavior"])
    answers = generate_texts(model, processor, prompts, max_new_tokens, batch_size)
    parsed = 0
    for answer, gold in zip(answers, golds, strict=True):
        try:
            behavior = parse_behavior(answer)
        except BehaviorParseError:
            behavior = None
        parsed += behavior is not None
        if gold.get("likes_percent") is not None:
            likes_pred.append(None if behavior is None else behavior.likes_percent)
            likes_gold.append(gold["likes_percent"])
        if gold.get("replay"):
            replay_pred.append(replay_prediction(behavior))
            replay_gold.append(gold["replay"])
    model.train(was_training)
    replay = replay_scores(replay_pred, replay_gold)
    return {
        "likes_r2": likes_r2(likes_pred, likes_gold)["r2"],
        "comment_ppl": comment_perplexity(nll)["perplexity"],
        "replay_rmse": replay["rmse"],
        "replay_accuracy": replay["accuracy"],
        "replay_missing": replay["missing"],
        "replay_extra": replay["extra"],
        "replay_repeated": replay["repeated"],
        "samples": n,
        "parsed": parsed,
    }
