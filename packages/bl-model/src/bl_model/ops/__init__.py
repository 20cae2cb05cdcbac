"""Fused ops of the model. Each op has a PyTorch reference (the spec, and the CPU path) and a dispatcher."""

from __future__ import annotations

from typing import Literal

import torch

from .compress import compress_video_tokens_reference

Backend = Literal["auto", "reference"]


def compress_video_tokens(
    x: torch.Tensor,
    q: torch.Tensor,
    key_weight: torch.Tensor,
    key_bias: torch.Tensor | None = None,
    *,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaMA-VID context + content tokens. x (F, N, C), q (P, F, M, C) -> ctx (P, F, C), content (F, C).

    Backends: "reference" (PyTorch, any device) and "auto" (the fastest one available: the reference).
    """
    if backend in ("auto", "reference"):
        return compress_video_tokens_reference(x, q, key_weight, key_bias)
    raise ValueError(f"backend must be 'auto' or 'reference', got {backend!r}")


__all__ = ["compress_video_tokens", "compress_video_tokens_reference"]
