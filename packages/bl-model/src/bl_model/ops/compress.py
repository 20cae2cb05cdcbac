"""LLaMA-VID token compression: per frame, one text-guided context vector and one content vector.

    ctx[p, f]  = mean_m softmax_n( q[p,f,m] · (x[f,n] W_kᵀ + b_k) / √C ) · x[f]      (P, F, C)
    content[f] = mean_n x[f, n]                                                       (F, C)

The reference uses the algebra the naive form hides: q·(x W_kᵀ)ᵀ = (q W_k)·xᵀ, so K = x W_kᵀ is never
formed and q' = q W_k is one small GEMM; the mean over M queries collapses to one weight vector over N;
x is shared by the P prompts (never copied per prompt). b_k only shifts every score of a softmax row by
the same q·b_k, so it cancels; it is kept so the formula stays literal (its gradient is ~0).
"""

from __future__ import annotations

import math

import torch


def _check_inputs(
    x: torch.Tensor, q: torch.Tensor, key_weight: torch.Tensor, key_bias: torch.Tensor | None
) -> None:
    if x.dim() != 3:
        raise ValueError(f"x must be (F, N, C), got shape {tuple(x.shape)}")
    F_, N, C = x.shape
    if q.dim() != 4 or q.shape[1] != F_ or q.shape[3] != C:
        raise ValueError(f"q must be (P, F={F_}, M, C={C}), got shape {tuple(q.shape)}")
    if key_weight.shape != (C, C):
        raise ValueError(f"key_weight must be ({C}, {C}), got shape {tuple(key_weight.shape)}")
    if key_bias is not None and key_bias.shape != (C,):
        raise ValueError(f"key_bias must be ({C},), got shape {tuple(key_bias.shape)}")
    if N == 0:
        raise ValueError("x has no tokens (N = 0)")
    dtypes = {t.dtype for t in (x, q, key_weight) if t is not None}
    if len(dtypes) != 1 or not dtypes.pop().is_floating_point:
        raise TypeError(
            f"x, q and key_weight must share one floating dtype, got {x.dtype}, {q.dtype}, {key_weight.dtype}"
        )


def compress_video_tokens_reference(
    x: torch.Tensor, q: torch.Tensor, key_weight: torch.Tensor, key_bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (F, N, C), q (P, F, M, C), key_weight (C, C), key_bias (C,) -> ctx (P, F, C), content (F, C)."""
    _check_inputs(x, q, key_weight, key_bias)
    P, F_, M, C = q.shape
    q_folded = (q @ key_weight).permute(1, 0, 2, 3).reshape(F_, P * M, C)  # (F, P*M, C) = q W_k
    scores = torch.bmm(q_folded, x.transpose(1, 2))  # (F, P*M, N); x is read in place, never expanded
    if key_bias is not None:
        bias_shift = (q @ key_bias).permute(1, 0, 2).reshape(F_, P * M, 1)  # (F, P*M, 1) = q·b_k
        scores = scores + bias_shift
    probs = torch.softmax(scores / math.sqrt(C), dim=-1)  # (F, P*M, N)
    weights = probs.view(F_, P, M, -1).mean(dim=2)  # (F, P, N): one weight vector per (prompt, frame)
    ctx = torch.bmm(weights, x).transpose(0, 1)  # (F, P, C) -> (P, F, C)
    content = x.mean(dim=1)  # (F, C)
    return ctx, content
