"""Packed causal attention timings: our Triton varlen kernel against padded SDPA flash, compiled flex_attention
with a document-causal block mask, the per-segment reference (and flash-attn's varlen kernel when installed).

FLOP model: per segment of L tokens, causal forward = 4 * L^2 * D * H / 2 (QK^T and PV, half of the square),
forward+backward = 3.5x that; padding and masked-out work are not counted.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from bl_model.ops import varlen_attention as va
from bl_model.ops.varlen_attention import varlen_attention_reference, varlen_attention_triton

from .report import AGREE_TOL
from .runner import Runner, Sizes, copies_for, nbytes, rel_rms, rotating


def segment_lengths(total: int, low: int, high: int, seed: int = 0) -> list[int]:
    """Mixed lengths in [low, high] summing to total (a fixed seed); needs total >= low."""
    g = torch.Generator().manual_seed(seed)
    lens, left = [], total
    while left > high:
        length = int(torch.randint(low, min(high, left - low) + 1, (1,), generator=g))
        lens.append(length)
        left -= length
    return [*lens, left]


def attention_flops(lens: list[int], heads: int, dim: int) -> dict[str, float]:
    """The FLOP model (module docstring): causal, useful work only."""
    fwd = sum(4 * L * L * dim * heads / 2 for L in lens)
    return {"fwd": fwd, "fwd+bwd": 3.5 * fwd}


def _pad(t: torch.Tensor, lens: list[int]) -> torch.Tensor:
    """(T, H, D) packed -> (S, Lmax, H, D), zeros after each segment."""
    out = t.new_zeros(len(lens), max(lens), *t.shape[1:])
    for i, (start, length) in enumerate(zip(itertools.accumulate([0, *lens[:-1]]), lens, strict=True)):
        out[i, :length] = t[start : start + length]
    return out


def _unpad(t: torch.Tensor, lens: list[int]) -> torch.Tensor:
    """(S, Lmax, H, D) -> (T, H, D)."""
    return torch.cat([t[i, :length] for i, length in enumerate(lens)])


def padded_sdpa_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(S, Lmax, H, D) each -> (S, Lmax, H, D); causal, so the trailing padding never reaches a real token."""
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        o = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
    return o.transpose(1, 2)


def make_flex(runner: Runner, lens: list[int]) -> Callable:
    """Compiled flex_attention with a document-causal block mask over the packed tokens: (T, H, D) -> (T, H, D)."""
    T = sum(lens)
    doc = torch.repeat_interleave(
        torch.arange(len(lens), device=runner.device), torch.tensor(lens, device=runner.device)
    )

    def document_causal(b, h, q_idx, kv_idx):
        return (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)

    block_mask = create_block_mask(document_causal, None, None, T, T, device=runner.device)
    flex = runner.compile(flex_attention)

    def run(q, k, v):
        o = flex(
            q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], block_mask=block_mask
        )
        return o[0].transpose(0, 1)

    return run


@dataclass
class AttentionBench:
    """Inputs and implementations for the packed-attention timings, built once for both modes."""

    lens: list[int]
    flops: dict[str, float]
    packed: list[tuple]  # k sets of q, k, v (T, H, D) leaves and dO (T, H, D)
    padded: list[tuple]  # the same values padded to (S, Lmax, H, D)
    impls: dict[str, tuple[Callable, list]]  # name -> (fn(q, k, v), the sets it takes)
    ours: torch.Tensor  # our kernel's forward output on the first set


def prepare_attention(runner: Runner, sizes: Sizes, dtype=torch.bfloat16) -> AttentionBench:
    dev, H, Hkv, D = runner.device, sizes.attn_heads, sizes.attn_kv_heads, sizes.attn_dim
    lens = segment_lengths(sizes.attn_tokens, sizes.attn_min_len, sizes.attn_max_len)
    T, max_len = sum(lens), max(lens)
    cu = torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int32, device=dev)
    runner.report["meta"]["attention_segments"] = lens
    g = torch.Generator(device=dev).manual_seed(7)

    def packed_set() -> tuple:
        q, k, v, do = (torch.randn(T, h, D, generator=g, device=dev).to(dtype) for h in (H, Hkv, Hkv, H))
        return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), do

    first = packed_set()
    packed = [first] + [packed_set() for _ in range(copies_for(nbytes(*first), runner) - 1)]
    padded = [(*(_pad(t.detach(), lens).requires_grad_() for t in s[:3]), _pad(s[3], lens)) for s in packed]
    impls: dict[str, tuple[Callable, list]] = {
        "triton varlen (ours)": (lambda q, k, v: varlen_attention_triton(q, k, v, cu, max_len), packed),
        "padded SDPA flash": (padded_sdpa_flash, padded),
        "flex_attention + document mask": (make_flex(runner, lens), packed),
        "reference (SDPA per segment)": (lambda q, k, v: varlen_attention_reference(q, k, v, cu), packed),
    }
    if va.flash_attn_varlen_func is not None and not runner.self_test:
        impls["flash-attn varlen"] = (
            lambda q, k, v: va.varlen_attention(q, k, v, cu, max_len, backend="flash_attn"),
            packed,
        )
    with torch.no_grad():
        ours = varlen_attention_triton(*(t.detach() for t in packed[0][:3]), cu, max_len)
    return AttentionBench(lens, attention_flops(lens, H, D), packed, padded, impls, ours)


def _attn_fwd_bwd(fn: Callable, sets: list) -> Callable[[], object]:
    next_set = rotating(sets)

    def run():
        q, k, v, do = next_set()
        return torch.autograd.grad(fn(q, k, v), (q, k, v), do)

    return run


def _attn_fwd(fn: Callable, sets: list) -> Callable[[], object]:
    next_set = rotating(sets)

    def run():
        q, k, v, _ = next_set()
        with torch.no_grad():
            return fn(q.detach(), k.detach(), v.detach())

    return run


def run_attention(runner: Runner, bench: AttentionBench, mode: str) -> None:
    """Time every implementation in mode ("fwd+bwd" or "fwd"); rows go to report["attention"]."""
    wrap = {"fwd+bwd": _attn_fwd_bwd, "fwd": _attn_fwd}[mode]
    for name, (fn, sets) in bench.impls.items():
        row = dict(
            mode=mode,
            impl=name,
            tokens=sum(bench.lens),
            segments=len(bench.lens),
            flops=bench.flops[mode],
            input_sets=len(sets),
        )
        if runner.self_test and name.startswith("flex") and mode == "fwd+bwd":
            row.update(ms=None, status="skipped: flex_attention has no backward on the cpu")
        else:
            if runner.self_test and name.startswith("flex"):
                row["status"] = "ok (ran once, eager; torch.compile skipped on the cpu)"
            runner.timed_case(row, lambda fn=fn, sets=sets: wrap(fn, sets))
        if mode == "fwd" and row["status"].startswith("ok"):
            with torch.no_grad():
                out = fn(*(t.detach() for t in sets[0][:3]))
            out = _unpad(out, bench.lens) if sets is bench.padded else out
            row["rel_diff_vs_ours"] = rel_rms(out, bench.ours)
        runner.report["attention"].append(row)
        runner.write()
    print(f"attention {mode} done ({runner.elapsed():.0f} s)", flush=True)


def derive_attention(runner: Runner) -> None:
    gemm = runner.report["ceilings"].get("gemm", {}).get("TFLOP_s")
    rows = runner.report["attention"]
    sdpa = {r["mode"]: r.get("ms") for r in rows if r["impl"] == "padded SDPA flash"}
    for r in rows:
        ms = r.get("ms")
        r["TFLOP_s"] = None if ms is None else r["flops"] / ms / 1e9
        r["pct_of_gemm"] = None if ms is None or not gemm else 100 * r["TFLOP_s"] / gemm
        base = sdpa.get(r["mode"])
        r["speedup_vs_padded_sdpa"] = None if ms is None or base is None else base / ms
        if "rel_diff_vs_ours" in r:
            r["agrees"] = r["rel_diff_vs_ours"] <= AGREE_TOL
