"""The ancestors' code that the benchmarks compare against (not part of any package).

`ancestor_token_generation` is LLaMA-VID's eager `token_generation` maths: it copies the frames per prompt,
projects K = x W_kᵀ + b_k for every token, then attends. Used by `test_model_step.py` (CPU) and
`gpu_check.py` (CUDA); both put this folder on `sys.path` (`conftest.py` for pytest).
"""

from __future__ import annotations

import math

import torch


def ancestor_token_generation(
    x: torch.Tensor, q: torch.Tensor, key_weight: torch.Tensor, key_bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (F, N, C), q (P, F, M, C), key_weight (C, C), key_bias (C,) -> ctx (P, F, C), content (F, C)."""
    P, F, _, C = q.shape
    frames = x[None].expand(P, -1, -1, -1).flatten(0, 1)  # (P*F, N, C) copy of x per prompt
    keys = frames @ key_weight.T + key_bias  # (P*F, N, C): K for every token
    attn = (q.flatten(0, 1) @ keys.transpose(1, 2) / math.sqrt(C)).softmax(-1)  # (P*F, M, N)
    ctx = (attn @ frames).mean(1).view(P, F, C)  # (P, F, C)
    return ctx, x.mean(1)
