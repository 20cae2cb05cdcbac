"""Packed (varlen) causal attention on the CPU: the per-segment reference against padded SDPA over the same
tokens, forward + backward. 4 segments of mixed lengths (1024 tokens), 8 heads, head dim 64, fp32.

Padded SDPA runs one (S, H, Lmax, D) causal attention, so it does (S * Lmax^2) / sum(L^2) times the useful work;
the packed reference runs one SDPA per segment. Each test reports its median, and the padded test the ratio
padded / packed measured side by side in this run (`benchmark.extra_info`).
"""

import itertools

import torch
import torch.nn.functional as F

from bl_model.ops.varlen_attention import varlen_attention_reference

LENS = [96, 512, 160, 256]  # 1024 tokens; Lmax = 512
HEADS, DIM = 8, 64
_MEDIANS: dict[str, float] = {}


def _median(benchmark) -> float | None:
    """The benchmark's median in seconds, or None when benchmarks are disabled (plain `pytest`)."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median


def _packed_inputs() -> tuple[torch.Tensor, ...]:
    """q, k, v leaves (T, H, D) and the output gradient (T, H, D)."""
    g = torch.Generator().manual_seed(0)
    q, k, v, do = (torch.randn(sum(LENS), HEADS, DIM, generator=g) for _ in range(4))
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), do


def _pad(t: torch.Tensor) -> torch.Tensor:
    """(T, H, D) -> (S, H, Lmax, D), zeros after each segment."""
    out = t.new_zeros(len(LENS), t.shape[1], max(LENS), t.shape[2])
    for i, (start, length) in enumerate(zip(itertools.accumulate([0, *LENS[:-1]]), LENS, strict=True)):
        out[i, :, :length] = t[start : start + length].transpose(0, 1)
    return out


CU = torch.tensor([0, *itertools.accumulate(LENS)], dtype=torch.int32)


def _packed_step(q, k, v, do):
    return torch.autograd.grad(varlen_attention_reference(q, k, v, CU), (q, k, v), do)


def _padded_step(q, k, v, do):
    return torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v), do)


def test_packed_reference_fwd_bwd(benchmark):
    """varlen_attention_reference (one causal SDPA per segment), forward + backward."""
    inputs = _packed_inputs()
    dq, _, _ = benchmark(_packed_step, *inputs)
    assert dq.shape == inputs[0].shape
    if (median := _median(benchmark)) is not None:
        _MEDIANS["packed"] = median


def test_padded_sdpa_fwd_bwd(benchmark):
    """The same tokens padded to (S, H, Lmax, D), one causal SDPA, forward + backward; reports padded / packed."""
    q, k, v, do = _packed_inputs()
    padded = [_pad(t.detach()).requires_grad_() for t in (q, k, v)]
    dq_padded, _, _ = benchmark(_padded_step, *padded, _pad(do))
    # the padded run gives the packed gradients on the real tokens
    dq_packed, _, _ = _packed_step(q, k, v, do)
    torch.testing.assert_close(
        dq_padded[0, :, : LENS[0]].transpose(0, 1), dq_packed[: LENS[0]], rtol=1e-4, atol=1e-5
    )
    benchmark.extra_info["useful_work_fraction"] = round(
        sum(L * L for L in LENS) / (len(LENS) * max(LENS) ** 2), 3
    )
    median = _median(benchmark)
    if median is not None and "packed" in _MEDIANS:
        benchmark.extra_info["padded_over_packed"] = round(median / _MEDIANS["packed"], 2)
