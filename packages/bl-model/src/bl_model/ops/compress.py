"""LLaMA-VID token compression: per frame, one text-guided context vector and one content vector.

    ctx[p, f]  = mean_m softmax_n( q[p,f,m] · (x[f,n] W_kᵀ + b_k) / √C ) · x[f]      (P, F, C)
    content[f] = mean_n x[f, n]                                                       (F, C)

The reference uses the algebra the naive form hides: q·(x W_kᵀ)ᵀ = (q W_k)·xᵀ, so K = x W_kᵀ is never
formed and q' = q W_k is one small GEMM; the mean over M queries collapses to one weight vector over N;
x is shared by the P prompts (never copied per prompt). b_k only shifts every score of a softmax row by
the same q·b_k, so it cancels; it is kept so the formula stays literal (its gradient is ~0).

The Triton path (`compress_video_tokens_triton`) computes q' = q W_k with one torch GEMM and then, per
(prompt, frame), keeps the M×N scores, their softmax and the weight vector w on chip: x[f] is read twice
(scores, then ctx = w x[f]) and K is never formed. b_k is dropped (its gradient is exactly zero). The
backward recomputes the softmax (flash-style, nothing M×N is saved), writes dq' and the fp32 score gradient
ds = a ⊙ (dw/M − Σ_n a dw/M)/√C, then dx = dcontent/N + Σ_p (w ⊗ dctx + dsᵀ q') in a second kernel; dq and
dW_k are torch GEMMs on dq'. Kernels load fp32/fp16/bf16 and compute in fp32; all N tokens of a frame sit
in one block (`triton_supports` says which M, N fit). `TRITON_INTERPRET=1`, set before this module is
imported, runs them on CPU tensors.
"""

from __future__ import annotations

import math

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # torch wheels without triton (e.g. macOS): only the reference is available
    triton = None

# What @triton.jit sees when the kernels below are defined: interpreted kernels run on CPU tensors.
_INTERPRETED = triton is not None and triton.knobs.runtime.interpret


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


# ---------------------------------------------------------------------------------------------------------
# Triton kernels. Shapes: x (F, N, C) with strides; q' = q W_k (P, F, M, C) contiguous; "pf" = p * F + f.
# ---------------------------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _load_tile(ptr, rows, cols, n_rows, n_cols, stride_r, stride_c):
        """ptr[rows, cols] as fp32 (len(rows), len(cols)), zero outside (n_rows, n_cols)."""
        ptrs = ptr + rows[:, None] * stride_r + cols[None, :] * stride_c  # (len(rows), len(cols))
        mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
        return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)

    @triton.jit
    def _cast_out(v, ptr):
        """fp32 v rounded to nearest even in ptr's element type (by hand for bf16: the CPU interpreter truncates)."""
        if ptr.dtype.element_ty == tl.bfloat16:
            bits = v.to(tl.uint32, bitcast=True)  # same shape as v
            bits = bits + ((bits >> 16) & 1) + 0x7FFF
            out = (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
        else:
            out = v.to(ptr.dtype.element_ty)
        return out

    @triton.jit
    def _softmax_probs(
        x_f,
        qk_pf,
        dctx_pf,
        N,
        M,
        C,
        stride_xn,
        stride_xc,
        scale,
        WITH_DW: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_C: tl.constexpr,
        DOT_PRECISION: tl.constexpr,
    ):
        """a = softmax_n(q'[p,f] x[f]ᵀ · scale) (BLOCK_M, BLOCK_N), zero outside (M, N); dw = x[f] dctx[p,f] (BLOCK_N,)."""
        offs_m = tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        s = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        dw = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            x_t = _load_tile(x_f, offs_n, cc, N, C, stride_xn, stride_xc)  # (BLOCK_N, BLOCK_C)
            q_t = _load_tile(qk_pf, offs_m, cc, M, C, C, 1)  # (BLOCK_M, BLOCK_C)
            s += tl.dot(q_t, tl.trans(x_t), input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N)
            if WITH_DW:
                g = tl.load(dctx_pf + cc, mask=cc < C, other=0.0).to(tl.float32)  # (BLOCK_C,)
                dw += tl.sum(x_t * g[None, :], axis=1)  # (BLOCK_N,)
        s = tl.where(offs_n[None, :] < N, s * scale, float("-inf"))  # (BLOCK_M, BLOCK_N)
        e = tl.exp(s - tl.max(s, axis=1)[:, None])  # (BLOCK_M, BLOCK_N)
        a = tl.where(offs_m[:, None] < M, e / tl.sum(e, axis=1)[:, None], 0.0)  # (BLOCK_M, BLOCK_N)
        return a, dw

    @triton.jit
    def _compress_fwd_kernel(
        x_ptr,
        qk_ptr,
        ctx_ptr,
        content_ptr,
        F,
        N,
        M,
        C,
        stride_xf,
        stride_xn,
        stride_xc,
        scale,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_C: tl.constexpr,
        DOT_PRECISION: tl.constexpr,
    ):
        """Grid (P, F): ctx[p, f] = w x[f] (C,) with w = mean_m softmax (N,); program p = 0 also writes content[f]."""
        p = tl.program_id(0)
        f = tl.program_id(1).to(tl.int64)
        pf = p * F + f
        x_f = x_ptr + f * stride_xf
        a, _ = _softmax_probs(
            x_f,
            qk_ptr + pf * M * C,
            ctx_ptr,
            N,
            M,
            C,
            stride_xn,
            stride_xc,
            scale,
            False,
            BLOCK_M,
            BLOCK_N,
            BLOCK_C,
            DOT_PRECISION,
        )
        w = tl.sum(a, axis=0) / M  # (BLOCK_N,)
        offs_n = tl.arange(0, BLOCK_N)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            x_t = _load_tile(x_f, offs_n, cc, N, C, stride_xn, stride_xc)  # (BLOCK_N, BLOCK_C)
            ctx = tl.sum(w[:, None] * x_t, axis=0)  # (BLOCK_C,)
            tl.store(ctx_ptr + pf * C + cc, _cast_out(ctx, ctx_ptr), mask=cc < C)
            content = tl.sum(x_t, axis=0) / N  # (BLOCK_C,)
            tl.store(content_ptr + f * C + cc, _cast_out(content, content_ptr), mask=(cc < C) & (p == 0))

    @triton.jit
    def _compress_bwd_scores_kernel(
        x_ptr,
        qk_ptr,
        dctx_ptr,
        dqk_ptr,
        ds_ptr,
        w_ptr,
        F,
        N,
        M,
        C,
        stride_xf,
        stride_xn,
        stride_xc,
        scale,
        NEED_DQ: tl.constexpr,
        NEED_DX: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_C: tl.constexpr,
        DOT_PRECISION: tl.constexpr,
    ):
        """Grid (P, F): recompute the softmax; ds = dL/d(q' xᵀ) (M, N) and w (N,) for dx; dq'[p, f] = ds x[f] (M, C)."""
        p = tl.program_id(0)
        f = tl.program_id(1).to(tl.int64)
        pf = p * F + f
        x_f = x_ptr + f * stride_xf
        a, dw = _softmax_probs(
            x_f,
            qk_ptr + pf * M * C,
            dctx_ptr + pf * C,
            N,
            M,
            C,
            stride_xn,
            stride_xc,
            scale,
            True,
            BLOCK_M,
            BLOCK_N,
            BLOCK_C,
            DOT_PRECISION,
        )
        g = dw / M  # (BLOCK_N,): dL/da[m, n], the same for every query m
        ds = a * (g[None, :] - tl.sum(a * g[None, :], axis=1)[:, None]) * scale  # (BLOCK_M, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        if NEED_DX:
            mn_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
            tl.store(ds_ptr + pf * M * N + offs_m[:, None] * N + offs_n[None, :], ds, mask=mn_mask)
            tl.store(w_ptr + pf * N + offs_n, tl.sum(a, axis=0) / M, mask=offs_n < N)
        if NEED_DQ:
            for c0 in range(0, C, BLOCK_C):
                cc = c0 + tl.arange(0, BLOCK_C)
                x_t = _load_tile(x_f, offs_n, cc, N, C, stride_xn, stride_xc)  # (BLOCK_N, BLOCK_C)
                dq = tl.dot(ds, x_t, input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_C)
                mc_mask = (offs_m[:, None] < M) & (cc[None, :] < C)
                tl.store(
                    dqk_ptr + pf * M * C + offs_m[:, None] * C + cc[None, :],
                    _cast_out(dq, dqk_ptr),
                    mask=mc_mask,
                )

    @triton.jit
    def _compress_bwd_dx_kernel(
        qk_ptr,
        dctx_ptr,
        dcontent_ptr,
        ds_ptr,
        w_ptr,
        dx_ptr,
        P,
        F,
        N,
        M,
        C,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_C: tl.constexpr,
        DOT_PRECISION: tl.constexpr,
    ):
        """Grid (F, N / BLOCK_N, C / BLOCK_C): dx[f] = dcontent[f] / N + Σ_p (w_p ⊗ dctx[p, f] + ds_pᵀ q'[p, f])."""
        f = tl.program_id(0).to(tl.int64)
        offs_m = tl.arange(0, BLOCK_M)
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        cc = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        dcontent = tl.load(dcontent_ptr + f * C + cc, mask=cc < C, other=0.0).to(tl.float32)  # (BLOCK_C,)
        acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32) + dcontent[None, :] / N  # (BLOCK_N, BLOCK_C)
        for p in range(P):
            pf = p * F + f
            ds_t = _load_tile(ds_ptr + pf * M * N, offs_n, offs_m, N, M, 1, N)  # (BLOCK_N, BLOCK_M) = ds_pᵀ
            q_t = _load_tile(qk_ptr + pf * M * C, offs_m, cc, M, C, C, 1)  # (BLOCK_M, BLOCK_C)
            w = tl.load(w_ptr + pf * N + offs_n, mask=offs_n < N, other=0.0)  # (BLOCK_N,)
            g = tl.load(dctx_ptr + pf * C + cc, mask=cc < C, other=0.0).to(tl.float32)  # (BLOCK_C,)
            acc += (
                tl.dot(ds_t, q_t, input_precision=DOT_PRECISION) + w[:, None] * g[None, :]
            )  # (BLOCK_N, BLOCK_C)
        nc_mask = (offs_n[:, None] < N) & (cc[None, :] < C)
        tl.store(dx_ptr + f * N * C + offs_n[:, None] * C + cc[None, :], _cast_out(acc, dx_ptr), mask=nc_mask)


MAX_QUERIES = 64  # M: the Q-Former's queries (32 in every released LLaMA-VID model)


def _block(n: int, smallest: int) -> int:
    """The power-of-two block (>= smallest >= 16, as tl.dot needs) that holds n rows."""
    return max(smallest, 1 << (n - 1).bit_length())


def triton_supports(M: int, N: int, dtype: torch.dtype) -> bool:
    """Whether backend='triton' takes M queries x N tokens in dtype: fp32/fp16/bf16, M <= 64, and the M x N
    scores of a (prompt, frame), all kept on chip, within BLOCK_M * BLOCK_N <= 32 * 512 (N <= 512 tokens at
    M <= 32, 256 at M <= 64). The compile gate found the backward at 32 x 1024 spilling on sm_80 / sm_90 and
    past sm_80's shared memory, so 336-px towers (N = 576) use the reference."""
    if dtype not in (torch.float32, torch.float16, torch.bfloat16) or M > MAX_QUERIES:
        return False
    return _block(M, 32) * _block(N, 64) <= 1 << 14


def _launch_config(N: int, M: int, dtype: torch.dtype) -> dict:
    """Score-kernel blocks: all N tokens in one block (>= 64), M in 32 or 64 rows, C tiled. Every config this
    returns is compiled for sm_80 / sm_90 in CI (benchmarks/gpu_bench/compile_gate.py: no spills in 16-bit,
    shared memory within the per-block limit); input_precision and num_warps matter on GPUs only."""
    if not triton_supports(M, N, dtype):
        raise ValueError(
            f"backend='triton' keeps the M x N scores on chip: M={M} x N={N} in {dtype} is too large; "
            "use backend='reference'"
        )
    block_n = _block(N, 64)
    return dict(
        BLOCK_M=_block(M, 32),
        BLOCK_N=block_n,
        BLOCK_C=16 if dtype == torch.float32 or block_n >= 256 else 32,  # 32 x 256 x 32 spills 8 B on sm_100
        DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",  # bf16/fp16 operands are exact in tf32
        num_warps=4 if block_n <= 64 else 8 if block_n <= 256 else 16,
    )


def _dx_launch_config(cfg: dict) -> dict:
    """The dx kernel's blocks from the score kernel's: it tiles N as well (no softmax couples the tokens
    there), in (<= 64, 64) output tiles."""
    return cfg | dict(BLOCK_N=min(64, cfg["BLOCK_N"]), BLOCK_C=64, num_warps=4)


def _compress_forward(x: torch.Tensor, qk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (F, N, C) any strides, qk (P, F, M, C) contiguous -> ctx (P, F, C), content (F, C)."""
    P, F_, M, C = qk.shape
    N = x.shape[1]
    ctx = torch.empty(P, F_, C, dtype=x.dtype, device=x.device)  # (P, F, C)
    content = torch.empty(F_, C, dtype=x.dtype, device=x.device)  # (F, C)
    _compress_fwd_kernel[(P, F_)](
        x, qk, ctx, content, F_, N, M, C, *x.stride(), 1 / math.sqrt(C), **_launch_config(N, M, x.dtype)
    )
    return ctx, content


def _compress_backward(
    x: torch.Tensor,
    qk: torch.Tensor,
    dctx: torch.Tensor,
    dcontent: torch.Tensor,
    need_dq: bool,
    need_dx: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """x (F, N, C), qk (P, F, M, C), dctx (P, F, C), dcontent (F, C) -> dqk (P, F, M, C), dx (F, N, C) or None."""
    P, F_, M, C = qk.shape
    N = x.shape[1]
    cfg = _launch_config(N, M, x.dtype)
    dctx = dctx.contiguous()  # (P, F, C)
    dqk = torch.empty(qk.shape, dtype=qk.dtype, device=qk.device) if need_dq else None  # (P, F, M, C)
    ds = torch.empty(P, F_, M, N, dtype=torch.float32, device=x.device) if need_dx else None  # (P, F, M, N)
    w = torch.empty(P, F_, N, dtype=torch.float32, device=x.device) if need_dx else None  # (P, F, N)
    _compress_bwd_scores_kernel[(P, F_)](
        x, qk, dctx, dqk, ds, w, F_, N, M, C, *x.stride(), 1 / math.sqrt(C), need_dq, need_dx, **cfg
    )
    if not need_dx:
        return dqk, None
    dx = torch.empty(F_, N, C, dtype=x.dtype, device=x.device)  # (F, N, C)
    cfg = _dx_launch_config(cfg)
    grid = (F_, triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(C, cfg["BLOCK_C"]))
    _compress_bwd_dx_kernel[grid](qk, dctx, dcontent.contiguous(), ds, w, dx, P, F_, N, M, C, **cfg)
    return dqk, dx


class CompressVideoTokensFunction(torch.autograd.Function):
    """(x (F, N, C), q (P, F, M, C), key_weight (C, C), key_bias (C,) | None) -> ctx (P, F, C), content (F, C)."""

    @staticmethod
    def forward(ctx, x, q, key_weight, key_bias):
        qk = (q @ key_weight).contiguous()  # (P, F, M, C) = q W_k; b_k cancels in the softmax
        out, content = _compress_forward(x, qk)
        ctx.save_for_backward(x, q, key_weight, qk)
        if not ctx.needs_input_grad[0]:
            ctx.mark_non_differentiable(content)  # content = mean_n x depends on x alone
        ctx.bias_shape = None if key_bias is None else key_bias.shape
        return out, content

    @staticmethod
    def backward(ctx, dctx, dcontent):
        x, q, key_weight, qk = ctx.saved_tensors
        need_x, need_q, need_w, need_b = ctx.needs_input_grad
        dqk, dx = _compress_backward(x, qk, dctx, dcontent, need_dq=need_q or need_w, need_dx=need_x)
        dq = dqk @ key_weight.T if need_q else None  # (P, F, M, C)
        dw = q.reshape(-1, q.shape[-1]).T @ dqk.reshape(-1, q.shape[-1]) if need_w else None  # (C, C)
        db = torch.zeros(ctx.bias_shape, dtype=qk.dtype, device=qk.device) if need_b else None  # (C,)
        return dx, dq, dw, db


def compress_video_tokens_triton(
    x: torch.Tensor, q: torch.Tensor, key_weight: torch.Tensor, key_bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton forward + backward: x (F, N, C), q (P, F, M, C), key_weight (C, C), key_bias (C,) | None
    -> ctx (P, F, C), content (F, C), in the input dtype (fp32, fp16 or bf16).

    CUDA tensors, or CPU tensors when `TRITON_INTERPRET=1` was set before this module was imported.
    """
    _check_inputs(x, q, key_weight, key_bias)
    if triton is None:
        raise RuntimeError("backend='triton' needs the triton package, which is not installed")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"backend='triton' supports float32, float16 and bfloat16, got {x.dtype}")
    if len({t.device for t in (x, q, key_weight)}) != 1:
        raise ValueError(
            f"x, q and key_weight must be on one device, got {x.device}, {q.device}, {key_weight.device}"
        )
    if not x.is_cuda and not _INTERPRETED:
        raise RuntimeError(
            "backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before bl_model is imported; "
            "use CUDA tensors or backend='reference'"
        )
    return CompressVideoTokensFunction.apply(x, q, key_weight, key_bias)
