"""Packed (varlen) causal attention: several sequences share one row of T tokens, split by `cu_seqlens`.

    cu_seqlens = [0, 5, 6, 20]  ->  segments [0, 5), [5, 6), [6, 20); token t of segment s attends to the
    tokens of segment s at or before t, never across a boundary.

q (T, Hq, D), k / v (T, Hkv, D) with Hq a multiple of Hkv (GQA: query head h reads kv head h // (Hq / Hkv)).

Three ways: `varlen_attention_reference` (PyTorch SDPA per segment: the spec and the CPU path), a Triton
flash-attention (`VarlenAttentionFunction`: one program per (block, head, segment), online softmax, fp32
accumulation, log-sum-exp saved for a dk/dv kernel and a dq kernel) and the dispatcher `varlen_attention`
(flash-attn's `flash_attn_varlen_func` on CUDA when installed, else the Triton kernel; the reference on CPU).
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    _jit = triton.jit
except ImportError:  # the reference and flash-attn paths need no Triton; the kernels stay plain functions
    triton = tl = None

    def _jit(fn):
        return fn


try:
    from flash_attn import flash_attn_varlen_func
except ImportError:
    flash_attn_varlen_func = None

Backend = Literal["auto", "reference", "triton", "flash_attn"]
_LOG2E = math.log2(math.e)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> None:
    if q.dim() != 3 or k.dim() != 3 or k.shape != v.shape:
        raise ValueError(
            f"q must be (T, Hq, D) and k, v (T, Hkv, D), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape[0] != q.shape[0] or k.shape[2] != q.shape[2] or q.shape[1] % k.shape[1]:
        raise ValueError(
            f"k, v {tuple(k.shape)} must match q {tuple(q.shape)} in tokens and head dim, with Hq a multiple of Hkv"
        )
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"cu_seqlens must be a 1-D int tensor (S+1,), got {cu_seqlens.dtype} {tuple(cu_seqlens.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype and q.dtype.is_floating_point):
        raise TypeError(f"q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")


def varlen_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, *, scale: float | None = None
) -> torch.Tensor:
    """Causal SDPA per segment. q (T, Hq, D), k / v (T, Hkv, D), cu_seqlens (S+1,) with cu_seqlens[-1] = T -> (T, Hq, D)."""
    _check_inputs(q, k, v, cu_seqlens)
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != q.shape[0] or any(a > b for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"cu_seqlens must rise from 0 to T={q.shape[0]}, got {bounds}")
    outs = []
    for start, end in itertools.pairwise(bounds):
        if end == start:
            continue
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))  # (H, L, D)
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, enable_gqa=True)
        outs.append(o.transpose(0, 1))  # (Hq, L, D) -> (L, Hq, D)
    return torch.cat(outs)  # (T, Hq, D)


# ---------------------------------------------------------------------------------------------------------
# Triton kernels. Tiles are loaded in the input dtype and upcast to fp32; LSE is kept in base 2 (exp2 is the
# fast path on GPU): p = exp2(q·k * scale * log2(e) - lse2).
# ---------------------------------------------------------------------------------------------------------


@_jit
def _fwd_kernel(
    Q,
    K,
    V,
    O,
    LSE,
    CU,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_ot,
    stride_oh,
    stride_lh,
    qk_scale,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One (query block, head, segment): O rows and their base-2 LSE."""
    pid_m, head, seg = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(CU + seg).to(tl.int64)  # base pointers move in int64 (T * H * D may pass 2^31)
    seqlen = tl.load(CU + seg + 1) - start
    if pid_m * BLOCK_M >= seqlen:
        return
    kv_head = head // GROUP
    Q += start * stride_qt + head * stride_qh
    K += start * stride_kt + kv_head * stride_kh
    V += start * stride_vt + kv_head * stride_vh
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,) positions within the segment
    offs_n = tl.arange(0, BLOCK_N)  # (BN,)
    offs_d = tl.arange(0, BLOCK_D)  # (BD,)
    row_ok, d_ok = rows < seqlen, offs_d < HEAD_DIM
    q_mask = row_ok[:, None] & d_ok[None, :]  # (BM, BD)
    q = tl.load(Q + rows[:, None] * stride_qt + offs_d[None, :], mask=q_mask, other=0.0).to(
        tl.float32
    )  # (BM, BD)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # (BM,) running max (base 2)
    l_i = tl.zeros([BLOCK_M], tl.float32)  # (BM,) running sum
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)  # (BM, BD)
    for n0 in range(0, tl.minimum((pid_m + 1) * BLOCK_M, seqlen), BLOCK_N):
        cols = n0 + offs_n  # (BN,)
        kv_mask = (cols < seqlen)[:, None] & d_ok[None, :]  # (BN, BD)
        k = tl.load(K + cols[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0).to(
            tl.float32
        )  # (BN, BD)
        v = tl.load(V + cols[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0).to(
            tl.float32
        )  # (BN, BD)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BM, BN)
        keep = (rows[:, None] >= cols[None, :]) & (cols < seqlen)[None, :]  # (BM, BN)
        s = tl.where(keep, s, float("-inf"))  # (BM, BN)
        m_new = tl.maximum(m_i, tl.max(s, 1))  # (BM,)
        alpha = tl.exp2(m_i - m_new)  # (BM,)
        p = tl.exp2(s - m_new[:, None])  # (BM, BN)
        l_i = l_i * alpha + tl.sum(p, 1)  # (BM,)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PRECISION)  # (BM, BD)
        m_i = m_new

    o = acc / l_i[:, None]  # (BM, BD)
    O += start * stride_ot + head * stride_oh
    tl.store(O + rows[:, None] * stride_ot + offs_d[None, :], o.to(O.dtype.element_ty), mask=q_mask)
    tl.store(LSE + head * stride_lh + start + rows, m_i + tl.log2(l_i), mask=row_ok)  # (BM,)


@_jit
def _bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DK,
    DV,
    CU,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_dot,
    stride_doh,
    stride_dkt,
    stride_dkh,
    stride_dvt,
    stride_dvh,
    stride_lh,
    scale,
    qk_scale,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One (key block, kv head, segment): dk, dv summed over the GQA group's query heads (no atomics)."""
    pid_n, kv_head, seg = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(CU + seg).to(tl.int64)
    seqlen = tl.load(CU + seg + 1) - start
    if pid_n * BLOCK_N >= seqlen:
        return
    Q += start * stride_qt
    DO += start * stride_dot
    LSE += start
    DELTA += start
    K += start * stride_kt + kv_head * stride_kh
    V += start * stride_vt + kv_head * stride_vh
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
    offs_m = tl.arange(0, BLOCK_M)  # (BM,)
    offs_d = tl.arange(0, BLOCK_D)  # (BD,)
    col_ok, d_ok = cols < seqlen, offs_d < HEAD_DIM
    kv_mask = col_ok[:, None] & d_ok[None, :]  # (BN, BD)
    k = tl.load(K + cols[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0).to(
        tl.float32
    )  # (BN, BD)
    v = tl.load(V + cols[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0).to(
        tl.float32
    )  # (BN, BD)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)  # (BN, BD)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)  # (BN, BD)
    for g in range(GROUP):
        head = kv_head * GROUP + g
        for m0 in range((pid_n * BLOCK_N // BLOCK_M) * BLOCK_M, seqlen, BLOCK_M):  # causal: rows >= first col
            rows = m0 + offs_m  # (BM,)
            row_ok = rows < seqlen
            q_mask = row_ok[:, None] & d_ok[None, :]  # (BM, BD)
            q_offs = rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :]  # (BM, BD)
            do_offs = rows[:, None] * stride_dot + head * stride_doh + offs_d[None, :]  # (BM, BD)
            q = tl.load(Q + q_offs, mask=q_mask, other=0.0).to(tl.float32)  # (BM, BD)
            do = tl.load(DO + do_offs, mask=q_mask, other=0.0).to(tl.float32)  # (BM, BD)
            lse = tl.load(LSE + head * stride_lh + rows, mask=row_ok, other=0.0)  # (BM,)
            delta = tl.load(DELTA + head * stride_lh + rows, mask=row_ok, other=0.0)  # (BM,)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BM, BN)
            keep = (rows[:, None] >= cols[None, :]) & row_ok[:, None] & col_ok[None, :]  # (BM, BN)
            p = tl.where(keep, tl.exp2(s - lse[:, None]), 0.0)  # (BM, BN)
            dv += tl.dot(tl.trans(p), do, input_precision=PRECISION)  # (BN, BD)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BM, BN)
            ds = p * (dp - delta[:, None])  # (BM, BN)
            dk += tl.dot(tl.trans(ds), q, input_precision=PRECISION)  # (BN, BD)
    DK += start * stride_dkt + kv_head * stride_dkh
    DV += start * stride_dvt + kv_head * stride_dvh
    tl.store(
        DK + cols[:, None] * stride_dkt + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty), mask=kv_mask
    )
    tl.store(DV + cols[:, None] * stride_dvt + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=kv_mask)


@_jit
def _bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DQ,
    CU,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_dot,
    stride_doh,
    stride_dqt,
    stride_dqh,
    stride_lh,
    scale,
    qk_scale,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One (query block, head, segment): dq."""
    pid_m, head, seg = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(CU + seg).to(tl.int64)
    seqlen = tl.load(CU + seg + 1) - start
    if pid_m * BLOCK_M >= seqlen:
        return
    kv_head = head // GROUP
    Q += start * stride_qt + head * stride_qh
    DO += start * stride_dot + head * stride_doh
    K += start * stride_kt + kv_head * stride_kh
    V += start * stride_vt + kv_head * stride_vh
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    offs_n = tl.arange(0, BLOCK_N)  # (BN,)
    offs_d = tl.arange(0, BLOCK_D)  # (BD,)
    row_ok, d_ok = rows < seqlen, offs_d < HEAD_DIM
    q_mask = row_ok[:, None] & d_ok[None, :]  # (BM, BD)
    q = tl.load(Q + rows[:, None] * stride_qt + offs_d[None, :], mask=q_mask, other=0.0).to(
        tl.float32
    )  # (BM, BD)
    do = tl.load(DO + rows[:, None] * stride_dot + offs_d[None, :], mask=q_mask, other=0.0).to(
        tl.float32
    )  # (BM, BD)
    lse = tl.load(LSE + head * stride_lh + start + rows, mask=row_ok, other=0.0)  # (BM,)
    delta = tl.load(DELTA + head * stride_lh + start + rows, mask=row_ok, other=0.0)  # (BM,)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)  # (BM, BD)
    for n0 in range(0, tl.minimum((pid_m + 1) * BLOCK_M, seqlen), BLOCK_N):
        cols = n0 + offs_n  # (BN,)
        kv_mask = (cols < seqlen)[:, None] & d_ok[None, :]  # (BN, BD)
        k = tl.load(K + cols[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0).to(
            tl.float32
        )  # (BN, BD)
        v = tl.load(V + cols[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0).to(
            tl.float32
        )  # (BN, BD)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BM, BN)
        keep = (rows[:, None] >= cols[None, :]) & row_ok[:, None] & (cols < seqlen)[None, :]  # (BM, BN)
        p = tl.where(keep, tl.exp2(s - lse[:, None]), 0.0)  # (BM, BN)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BM, BN)
        ds = p * (dp - delta[:, None])  # (BM, BN)
        dq += tl.dot(ds, k, input_precision=PRECISION)  # (BM, BD)
    DQ += start * stride_dqt + head * stride_dqh
    tl.store(
        DQ + rows[:, None] * stride_dqt + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty), mask=q_mask
    )


_INTERPRETED = triton is not None and isinstance(_fwd_kernel, InterpretedFunction)


def _launch_config(q: torch.Tensor, max_seqlen: int, block_size: int | None, backward: bool) -> dict:
    """Square blocks by a heuristic (no autotune), never past the longest segment: 64 for the forward at D ≤ 64,
    else 32; 8 warps for tiles over 32 x 64, except the backward at a masked head dim (80, 96 in a 128 block),
    which spills at 8 warps on sm_80 and not at 4. Every config this returns for D = 64, 80, 96, 128 is
    compiled for sm_80 / sm_90 in CI (benchmarks/gpu_bench/compile_gate.py): no spills in bf16 / fp16, shared
    memory within the per-block limit (fp32 inputs, with full fp32 dots, are for checking, not speed)."""
    D = q.shape[-1]
    max_block = 64 if D <= 64 and not backward else 32
    block = block_size or min(max_block, max(16, triton.next_power_of_2(max_seqlen)))
    block_d = max(16, triton.next_power_of_2(D))
    return {
        "HEAD_DIM": D,
        "BLOCK_D": block_d,
        "BLOCK_M": block,
        "BLOCK_N": block,
        # bf16 / fp16 values are exact in tf32, so q·k and dO·v lose nothing; fp32 inputs get full fp32 dots.
        "PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",
        "num_warps": 8 if block * block_d > 32 * 64 and not (backward and block_d != D) else 4,
        "num_stages": 2,
    }


def _store_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the kernels write: x's, except fp32 under the CPU interpreter, whose fp32 -> bf16 cast truncates
    (round toward zero, twice the error of round-to-nearest); PyTorch then rounds."""
    return torch.float32 if _INTERPRETED else x.dtype


class VarlenAttentionFunction(torch.autograd.Function):
    """Triton varlen causal attention. q (T, Hq, D), k / v (T, Hkv, D), cu_seqlens (S+1,) int -> (T, Hq, D)."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, max_seqlen: int, scale: float, block_size: int | None):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        T, Hq, _ = q.shape
        Hkv, S = k.shape[1], cu_seqlens.numel() - 1
        cfg = _launch_config(q, max_seqlen, block_size, backward=False)
        o = torch.empty_like(q, dtype=_store_dtype(q))  # (T, Hq, D)
        lse = torch.empty(Hq, T, device=q.device, dtype=torch.float32)  # (Hq, T) base 2
        grid = (triton.cdiv(max_seqlen, cfg["BLOCK_M"]), Hq, S)
        _fwd_kernel[grid](
            q,
            k,
            v,
            o,
            lse,
            cu_seqlens,
            q.stride(0),
            q.stride(1),
            k.stride(0),
            k.stride(1),
            v.stride(0),
            v.stride(1),
            o.stride(0),
            o.stride(1),
            lse.stride(0),
            scale * _LOG2E,
            GROUP=Hq // Hkv,
            **cfg,
        )
        ctx.save_for_backward(q, k, v, o, lse, cu_seqlens)
        ctx.max_seqlen, ctx.scale, ctx.block_size = max_seqlen, scale, block_size
        return o.to(q.dtype)

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, cu_seqlens = ctx.saved_tensors
        do = do.contiguous()  # (T, Hq, D)
        Hq, Hkv, S = q.shape[1], k.shape[1], cu_seqlens.numel() - 1
        cfg = _launch_config(q, ctx.max_seqlen, ctx.block_size, backward=True)
        delta = (do.float() * o.float()).sum(-1).T.contiguous()  # (Hq, T) = rowsum(dO ∘ O)
        dq, dk, dv = (torch.empty_like(t, dtype=_store_dtype(t)) for t in (q, k, v))  # like q, k, v
        n_blocks = triton.cdiv(ctx.max_seqlen, cfg["BLOCK_M"])
        common = (ctx.scale, ctx.scale * _LOG2E)
        _bwd_dkdv_kernel[(n_blocks, Hkv, S)](
            q,
            k,
            v,
            do,
            lse,
            delta,
            dk,
            dv,
            cu_seqlens,
            q.stride(0),
            q.stride(1),
            k.stride(0),
            k.stride(1),
            v.stride(0),
            v.stride(1),
            do.stride(0),
            do.stride(1),
            dk.stride(0),
            dk.stride(1),
            dv.stride(0),
            dv.stride(1),
            lse.stride(0),
            *common,
            GROUP=Hq // Hkv,
            **cfg,
        )
        _bwd_dq_kernel[(n_blocks, Hq, S)](
            q,
            k,
            v,
            do,
            lse,
            delta,
            dq,
            cu_seqlens,
            q.stride(0),
            q.stride(1),
            k.stride(0),
            k.stride(1),
            v.stride(0),
            v.stride(1),
            do.stride(0),
            do.stride(1),
            dq.stride(0),
            dq.stride(1),
            lse.stride(0),
            *common,
            GROUP=Hq // Hkv,
            **cfg,
        )
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


def varlen_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    *,
    scale: float | None = None,
    block_size: int | None = None,
) -> torch.Tensor:
    """Triton varlen causal attention. q (T, Hq, D), k / v (T, Hkv, D), cu_seqlens (S+1,) -> (T, Hq, D).

    `max_seqlen` must be at least the longest segment (it sizes the grid) and cu_seqlens[-1] must be T;
    neither is checked (that would synchronize). `block_size` (a power of two ≥ 16) overrides the heuristic.
    """
    _check_inputs(q, k, v, cu_seqlens)
    if triton is None:
        raise RuntimeError("the Triton backend needs the `triton` package")
    if not q.is_cuda and not _INTERPRETED:
        raise RuntimeError(
            "the Triton backend on CPU tensors needs TRITON_INTERPRET=1 set before importing bl_model"
        )
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    cu_seqlens = cu_seqlens.to(q.device, torch.int32)  # (S+1,)
    return VarlenAttentionFunction.apply(q, k, v, cu_seqlens, int(max_seqlen), scale, block_size)


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    *,
    scale: float | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Packed causal attention. q (T, Hq, D), k / v (T, Hkv, D), cu_seqlens (S+1,) int -> (T, Hq, D).

    "auto": flash-attn on CUDA fp16/bf16 when installed, else the Triton kernel on CUDA; the reference on CPU.
    """
    if backend == "auto":
        if not q.is_cuda:
            backend = "reference"
        elif flash_attn_varlen_func is not None and q.dtype in (torch.float16, torch.bfloat16):
            backend = "flash_attn"
        else:
            backend = "triton" if triton is not None else "reference"
    if backend == "reference":
        return varlen_attention_reference(q, k, v, cu_seqlens, scale=scale)
    if backend == "triton":
        return varlen_attention_triton(q, k, v, cu_seqlens, max_seqlen, scale=scale)
    if backend == "flash_attn":
        if flash_attn_varlen_func is None or not q.is_cuda:
            raise RuntimeError("the flash_attn backend needs the `flash-attn` package and CUDA tensors")
        _check_inputs(q, k, v, cu_seqlens)
        cu = cu_seqlens.to(q.device, torch.int32)  # (S+1,)
        return flash_attn_varlen_func(
            q, k, v, cu, cu, max_seqlen, max_seqlen, softmax_scale=scale, causal=True
        )
    raise ValueError(f"backend must be one of 'auto', 'reference', 'triton', 'flash_attn', got {backend!r}")
