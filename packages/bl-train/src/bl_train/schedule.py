"""Learning-rate schedule: linear warmup, then cosine decay to zero (or constant)."""

from __future__ import annotations

import math

import torch


def lr_lambda(step: int, total: int, warmup_ratio: float, schedule: str) -> float:
    """Multiplier of the peak lr at optimizer step `step` of `total`."""
    warmup = math.ceil(total * warmup_ratio)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def warmup_cosine(optimizer: torch.optim.Optimizer, total: int, warmup_ratio: float, schedule: str):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, total, warmup_ratio, schedule))
