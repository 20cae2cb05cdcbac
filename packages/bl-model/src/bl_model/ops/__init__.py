"""Fused ops of the model. Each op has a PyTorch reference (the spec, and the CPU path), a Triton kernel
with forward and backward, and a dispatcher."""

from __future__ import annotations

from typing import Literal

import torch

from .compress import (
    CompressVideoTokensFunction,
    _check_inputs,
    compress_video_tokens_reference,
    compress_video_tokens_triton,
    triton,
    triton_supports,
)

Backend = Literal["auto", "reference", "triton"]


def compress_video_tokens(
    x: torch.Tensor,
    q: torch.Tensor,
    key_weight: torch.Tensor,
    key_bias: torch.Tensor | None = None,
    *,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaMA-VID context + content tokens. x (F, N, C), q (P, F, M, C) -> ctx (P, F, C), content (F, C).

    Backends: "reference" (PyTorch, any device), "triton" (CUDA tensors, or CPU tensors under
    TRITON_INTERPRET=1) and "auto" (triton for CUDA tensors when triton is installed and
    `triton_supports` the shapes and dtype, else the reference).
    """
    if backend == "auto":
        _check_inputs(x, q, key_weight, key_bias)
        fits = triton is not None and triton_supports(q.shape[2], x.shape[1], x.dtype)
        backend = "triton" if x.is_cuda and fits else "reference"
    if backend == "reference":
        return compress_video_tokens_reference(x, q, key_weight, key_bias)
    if backend == "triton":
        return compress_video_tokens_triton(x, q, key_weight, key_bias)
    raise ValueError(f"backend must be 'auto', 'reference' or 'triton', got {backend!r}")


__all__ = [
    "CompressVideoTokensFunction",
    "compress_video_tokens",
    "compress_video_tokens_reference",
    "compress_video_tokens_triton",
    "triton_supports",
]
