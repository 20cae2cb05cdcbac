#!/usr/bin/env python3
# ruff: noqa: E402
# (imports follow code: TRITON_INTERPRET must be set before torch, triton and bl_model are imported)
"""One-call GPU check of bl-model's Triton kernels: ceilings, correctness on CUDA, timings side by side.

    python benchmarks/gpu_check.py --out DIR               # a CUDA machine; < 8 min on an H100, compiles included
    python benchmarks/gpu_check.py --out DIR --self-test   # the CPU, under TRITON_INTERPRET=1, tiny shapes

Both write DIR/gpu_check.json and DIR/gpu_check.md (a markdown table with the device's name and the date),
after every section, so a run cut short still leaves what it measured. Sections:

1. the device's name;
2. two ceilings measured in this run: device-to-device copy bandwidth (a 1 GiB `copy_`, bytes read + written)
   and the bf16 GEMM rate (8192³, random data);
3. correctness on the device: the compression kernel (forward, dx, dq, dW_k) and the packed-attention kernel
   (o, dq, dk, dv) against fp64 references: the kernel's error must be at most 2x the PyTorch reference's error
   in the same dtype (compression: RMS error, + 1e-6; attention: max-abs error, + one bf16/fp16 ulp at 1.0);
4. timings with `triton.testing.do_bench` (median of events; do_bench also flushes L2 before each call, and
   each timed call moves on to the next of k input sets whose total is >= 3x L2):
   - compression forward (under no_grad) and forward+backward (gradients for x, q, W_k and b_k through
     `torch.autograd.grad`) at T in {64, 300}, P in {1, 2}, bf16, N=256, C=1408, M=32: our Triton kernel, the
     PyTorch reference eager and under `torch.compile`, and LLaMA-VID's eager maths (`_ancestors.py`);
   - packed causal attention, forward+backward and forward, 16k tokens in segments of 256-2048 tokens (fixed
     seed), 40 heads (40 kv heads, as LLaMA-13B), head dim 128, bf16: our Triton varlen kernel (and
     flash-attn's varlen kernel when it is installed) against padded SDPA with the flash backend (inputs
     already padded to the longest segment, so padding costs nothing but the wasted work) and compiled
     `flex_attention` with a document-causal block mask (built once, outside the timing);
5. derived rates and the issue's targets, as pass/fail:
   - compression byte model (the fewest bytes: each input read once, each output written once; s = bytes per
     element): forward  = s * (F*N*C [x] + P*F*M*C [q, the same size as q' = q W_k] + C*C + C [W_k, b_k]
     + P*F*C + F*C [ctx, content]); forward+backward adds the reads of dctx, dcontent and the writes of
     dx, dq, dW_k, db_k. GB/s are reported against the measured copy bandwidth.
   - attention FLOP model: per segment of L tokens, causal forward = 4 * L^2 * D * H / 2 (QKᵀ and PV, half of
     the square), forward+backward = 3.5x that; padding and masked-out work are not counted, so every
     implementation is charged for the same useful FLOPs. TFLOP/s are reported against the measured GEMM rate.
   - targets: compression fwd+bwd >= 5x ancestor eager at T=300, P=2; compression fwd >= 70% of the copy
     bandwidth at T=300, P=2; packed attention fwd+bwd (Triton) no slower than padded SDPA flash.

`--self-test` runs the same code on the CPU at tiny shapes: the correctness checks in full, and every timing
case once (no do_bench; torch.compile is skipped and flex_attention runs forward only, as it has no CPU
backward), with timings reported as "n/a (cpu self-test)". Exit status: 0 when every correctness check
passed, 1 when one failed, 2 when run without CUDA and without --self-test. Targets never fail the exit status.
"""

from __future__ import annotations

import os
import sys

SELF_TEST = "--self-test" in sys.argv[1:]
if SELF_TEST:
    os.environ["TRITON_INTERPRET"] = (
        "1"  # before torch, triton or bl_model is imported: kernels run on the CPU
    )

import argparse
import datetime as dt
import importlib.util
import itertools
import json
import math
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))  # _ancestors.py
if importlib.util.find_spec("bl_model") is None:  # a bare checkout (the GPU machine): use the source tree
    sys.path.insert(0, str(_HERE.parent / "packages" / "bl-model" / "src"))

from _ancestors import ancestor_token_generation

from bl_model.ops import varlen_attention as va
from bl_model.ops.compress import (
    compress_video_tokens_reference,
    compress_video_tokens_triton,
    triton_supports,
)
from bl_model.ops.varlen_attention import varlen_attention_reference, varlen_attention_triton

NA = "n/a (cpu self-test)"
COMPRESS_OUTPUTS = ("ctx", "content", "dx", "dq", "dw")
ATTENTION_OUTPUTS = ("o", "dq", "dk", "dv")
ATTENTION_FLOOR = {torch.float32: 1e-6, torch.float16: 5e-4, torch.bfloat16: 4e-3}  # ~1 ulp at 1.0
AGREE_TOL = 5e-2  # relative RMS difference under which a baseline "computes the same thing" (bf16 vs bf16)


# ---------------------------------------------------------------------------------------------------------
# Sizes: the GPU run and the CPU self-test go through the same code with these.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    copy_bytes: int  # each of the copy's two buffers
    gemm_n: int
    check_compress: tuple  # (dtype, P, F, M, N, C) per correctness check
    check_attention: tuple  # (dtype, lens, Hq, Hkv, D) per correctness check
    compress_T: tuple[int, ...]
    compress_P: tuple[int, ...]
    compress_N: int
    compress_C: int
    compress_M: int
    attn_tokens: int
    attn_min_len: int
    attn_max_len: int
    attn_heads: int
    attn_kv_heads: int
    attn_dim: int


GPU_SIZES = Sizes(
    copy_bytes=1 << 30,
    gemm_n=8192,
    check_compress=(
        (torch.bfloat16, 2, 8, 32, 256, 1408),  # the model's shapes
        (torch.float16, 2, 4, 32, 255, 1408),  # odd N: the masked tail of the on-chip block
        (torch.float32, 1, 4, 32, 256, 1408),
    ),
    check_attention=((torch.bfloat16, (1, 700, 33, 1024, 250), 8, 2, 128),),  # GQA, length 1, many blocks
    compress_T=(64, 300),
    compress_P=(1, 2),
    compress_N=256,
    compress_C=1408,
    compress_M=32,
    attn_tokens=16384,
    attn_min_len=256,
    attn_max_len=2048,
    attn_heads=40,
    attn_kv_heads=40,
    attn_dim=128,
)

SELF_TEST_SIZES = Sizes(
    copy_bytes=1 << 20,
    gemm_n=64,
    check_compress=((torch.bfloat16, 2, 2, 4, 33, 40), (torch.float32, 2, 2, 4, 33, 40)),
    check_attention=((torch.bfloat16, (1, 5, 40), 4, 2, 128),),
    compress_T=(2, 3),
    compress_P=(1, 2),
    compress_N=33,
    compress_C=40,
    compress_M=4,
    attn_tokens=96,
    attn_min_len=8,
    attn_max_len=40,
    attn_heads=4,
    attn_kv_heads=4,
    attn_dim=32,
)


# ---------------------------------------------------------------------------------------------------------
# The runner: timing, compiling, the time budget, and the report written after every section.
# ---------------------------------------------------------------------------------------------------------


class Runner:
    def __init__(self, out_dir: Path, self_test: bool, budget_s: float, rep_ms: int):
        self.out_dir, self.self_test, self.budget_s, self.rep_ms = out_dir, self_test, budget_s, rep_ms
        self.device = torch.device("cpu" if self_test else "cuda")
        self.t0 = time.perf_counter()
        sections = ("correctness", "compression", "attention", "targets")
        self.report: dict = {"meta": {}, "ceilings": {}, **{name: [] for name in sections}}
        self.compiled_reference: Callable | None = None  # torch.compile'd compression reference, made once

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # surfaces asynchronous launch errors here, not in a later case

    def time_ms(self, fn: Callable[[], object]) -> float | None:
        """Median ms of fn over do_bench's repetitions; on the CPU self-test, fn runs once and None is returned."""
        if self.self_test:
            fn()
            return None
        return float(triton.testing.do_bench(fn, warmup=25, rep=self.rep_ms, return_mode="median"))

    def compile(self, fn: Callable) -> Callable:
        """torch.compile on the GPU; the self-test skips compilation (minutes on two CPU cores)."""
        return fn if self.self_test else torch.compile(fn)

    def timed_case(self, row: dict, make_fn: Callable[[], Callable[[], object]]) -> dict:
        """Fill row with first_call_s (compilation included), ms and status; errors are recorded, never raised."""
        if self.elapsed() > self.budget_s:
            row.update(ms=None, status=f"skipped: time budget ({self.budget_s:.0f} s) spent")
            return row
        try:
            fn = make_fn()
            start = time.perf_counter()
            fn()
            self.sync()
            row["first_call_s"] = round(time.perf_counter() - start, 2)
            row["ms"] = self.time_ms(fn)
            self.sync()
            row.setdefault("status", "ok" if not self.self_test else "ok (ran once)")
        except Exception as exc:  # one broken baseline must not cost the rest of the run
            traceback.print_exc()
            row.update(ms=None, status=f"error: {type(exc).__name__}: {exc}"[:300])
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # after an out-of-memory error, free what the failed case left cached
        return row

    def write(self) -> None:
        self.report["meta"]["elapsed_s"] = round(self.elapsed(), 1)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "gpu_check.json").write_text(json.dumps(self.report, indent=2, default=str) + "\n")
        (self.out_dir / "gpu_check.md").write_text(render_markdown(self.report))


def rotating(sets: list) -> Callable[[], tuple]:
    """Each call returns the next input set, cycling, so consecutive timed calls never reuse warm buffers."""
    counter = itertools.count()
    return lambda: sets[next(counter) % len(sets)]


def copies_for(set_bytes: int, runner: Runner) -> int:
    """How many input sets make >= 3x the L2 cache (at most 8)."""
    if runner.self_test:
        return 2
    l2 = getattr(torch.cuda.get_device_properties(runner.device), "L2_cache_size", 50 << 20)
    return max(1, min(8, math.ceil(3 * l2 / set_bytes)))


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()


# ---------------------------------------------------------------------------------------------------------
# 1-2. Device and ceilings
# ---------------------------------------------------------------------------------------------------------


def describe_device(runner: Runner) -> None:
    meta = runner.report["meta"]
    if runner.self_test:
        name = f"CPU ({platform.processor() or platform.machine()}), self-test under TRITON_INTERPRET=1"
    else:
        name = torch.cuda.get_device_name()
        props = torch.cuda.get_device_properties(runner.device)
        meta.update(
            sm_count=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            l2_mib=round(getattr(props, "L2_cache_size", 0) / 2**20, 1),
            cuda=torch.version.cuda,
        )
    print(f"device: {name}", flush=True)
    meta.update(
        mode="cpu self-test" if runner.self_test else "gpu",
        device=name,
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        torch=torch.__version__,
        triton=triton.__version__,
        python=platform.python_version(),
        flash_attn=va.flash_attn_varlen_func is not None,
        budget_s=runner.budget_s,
    )


def _copy_ceiling(runner: Runner, n_bytes: int) -> dict:
    src = torch.randn(n_bytes // 4, device=runner.device)  # fp32 elements
    dst = torch.empty_like(src)
    ms = runner.time_ms(lambda: dst.copy_(src))
    moved = 2 * nbytes(src)
    return dict(bytes_read_plus_written=moved, ms=ms, GB_s=None if ms is None else moved / ms / 1e6)


def _gemm_ceiling(runner: Runner, n: int) -> dict:
    a, b = (torch.randn(n, n, device=runner.device, dtype=torch.bfloat16) for _ in range(2))
    ms = runner.time_ms(lambda: a @ b)
    return dict(shape=f"{n}x{n}x{n} bf16", ms=ms, TFLOP_s=None if ms is None else 2 * n**3 / ms / 1e9)


def measure_ceilings(runner: Runner, sizes: Sizes) -> None:
    """Device-to-device copy (bytes read + written) and bf16 GEMM TFLOP/s, on random data."""
    c = runner.report["ceilings"]
    c["copy"] = _copy_ceiling(runner, sizes.copy_bytes)
    c["gemm"] = _gemm_ceiling(runner, sizes.gemm_n)
    runner.sync()
    if not runner.self_test:
        print(f"copy {c['copy']['GB_s']:.0f} GB/s, bf16 GEMM {c['gemm']['TFLOP_s']:.0f} TFLOP/s", flush=True)


# ---------------------------------------------------------------------------------------------------------
# 3. Correctness against fp64
# ---------------------------------------------------------------------------------------------------------


def _compress_run(inputs, grads, dtype, fn) -> dict[str, torch.Tensor]:
    """fn(x, q, w, b) in dtype, backward with the given output gradients -> {ctx, content, dx, dq, dw}."""
    leaves = [t.to(dtype).clone().requires_grad_() for t in inputs]
    ctx, content = fn(*leaves)
    torch.autograd.backward((ctx, content), [g.to(dtype) for g in grads])
    return dict(zip(COMPRESS_OUTPUTS, (ctx, content, *(t.grad for t in leaves[:3])), strict=True))


def check_compression(runner: Runner, dtype, P, F_, M, N, C) -> dict:
    g = torch.Generator().manual_seed(1000 * P + N + C)
    shapes = [(F_, N, C), (P, F_, M, C), (C, C), (C,), (P, F_, C), (F_, C)]
    x, q, w, b, dctx, dcontent = (torch.randn(s, generator=g, dtype=torch.float64) for s in shapes)
    inputs = [t.to(runner.device) for t in (x, q, w / math.sqrt(C), b)]
    grads = [t.to(runner.device) for t in (dctx, dcontent)]
    exact = _compress_run(inputs, grads, torch.float64, compress_video_tokens_reference)
    kernel = _compress_run(inputs, grads, dtype, compress_video_tokens_triton)
    reference = _compress_run(inputs, grads, dtype, compress_video_tokens_reference)
    outputs = {}
    for name in COMPRESS_OUTPUTS:
        err = (kernel[name].double() - exact[name]).pow(2).mean().sqrt().item()
        ref_err = (reference[name].double() - exact[name]).pow(2).mean().sqrt().item()
        ok = math.isfinite(err) and err <= 2 * ref_err + 1e-6 and kernel[name].dtype == dtype
        outputs[name] = dict(
            kernel_err=err, reference_err=ref_err, ratio=err / max(ref_err, 1e-30), passed=ok
        )
    return dict(
        name=f"compression {str(dtype).removeprefix('torch.')} P={P} F={F_} M={M} N={N} C={C}",
        rule="RMS error vs fp64 <= 2 x reference's + 1e-6",
        outputs=outputs,
        passed=all(o["passed"] for o in outputs.values()),
    )


def _attention_run(tensors, dtype, fn) -> list[torch.Tensor]:
    """fn(q, k, v) in dtype, backward with tensors[3] -> [o, dq, dk, dv] in fp64."""
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in tensors[:3])
    o = fn(q, k, v)
    o.backward(tensors[3].to(dtype))
    return [t.detach().double() for t in (o, q.grad, k.grad, v.grad)]


def check_attention(runner: Runner, dtype, lens, Hq, Hkv, D) -> dict:
    g = torch.Generator().manual_seed(sum(lens) + D)
    T = sum(lens)
    tensors = [
        torch.randn(T, H, D, generator=g, dtype=torch.float64).to(runner.device) for H in (Hq, Hkv, Hkv, Hq)
    ]
    cu = torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int32, device=runner.device)
    exact = _attention_run(tensors, torch.float64, lambda q, k, v: varlen_attention_reference(q, k, v, cu))
    ref = _attention_run(tensors, dtype, lambda q, k, v: varlen_attention_reference(q, k, v, cu))
    kernel = _attention_run(tensors, dtype, lambda q, k, v: varlen_attention_triton(q, k, v, cu, max(lens)))
    outputs = {}
    for name, got, base, want in zip(ATTENTION_OUTPUTS, kernel, ref, exact, strict=True):
        err, ref_err = (got - want).abs().max().item(), (base - want).abs().max().item()
        ok = math.isfinite(err) and err <= 2 * ref_err + ATTENTION_FLOOR[dtype]
        outputs[name] = dict(
            kernel_err=err, reference_err=ref_err, ratio=err / max(ref_err, 1e-30), passed=ok
        )
    return dict(
        name=f"packed attention {str(dtype).removeprefix('torch.')} lens={list(lens)} Hq={Hq} Hkv={Hkv} D={D}",
        rule=f"max-abs error vs fp64 <= 2 x reference's + {ATTENTION_FLOOR[dtype]:g}",
        outputs=outputs,
        passed=all(o["passed"] for o in outputs.values()),
    )


def run_correctness(runner: Runner, sizes: Sizes) -> None:
    checks = [(check_compression, c) for c in sizes.check_compress]
    checks += [(check_attention, c) for c in sizes.check_attention]
    for check, args in checks:
        try:
            result = check(runner, *args)
            runner.sync()
        except Exception as exc:
            traceback.print_exc()
            result = dict(name=f"{check.__name__}{args}", outputs={}, passed=False, error=repr(exc)[:300])
        runner.report["correctness"].append(result)
        worst = max((o["ratio"] for o in result["outputs"].values()), default=float("nan"))
        print(
            f"{'PASS' if result['passed'] else 'FAIL'} {result['name']} (worst error ratio {worst:.2f})",
            flush=True,
        )


# ---------------------------------------------------------------------------------------------------------
# 4a. Compression timings
# ---------------------------------------------------------------------------------------------------------


def compression_bytes(T: int, P: int, sizes: Sizes, element: int) -> dict[str, int]:
    """The byte model (module docstring): each input read once, each output written once."""
    N, C, M = sizes.compress_N, sizes.compress_C, sizes.compress_M
    x, q, wb, ctx, content = T * N * C, P * T * M * C, C * C + C, P * T * C, T * C
    fwd = x + q + wb + ctx + content
    return {"fwd": element * fwd, "fwd+bwd": element * (fwd + ctx + content + x + q + wb)}


def compression_sets(runner: Runner, sizes: Sizes, T: int, P: int, dtype) -> list[tuple]:
    """k sets of (x, q, w, b, dctx, dcontent) on the device; x, q, w, b are leaves that require grad."""
    N, C, M = sizes.compress_N, sizes.compress_C, sizes.compress_M
    g = torch.Generator(device=runner.device).manual_seed(T * 10 + P)

    def one() -> tuple:
        def rand(*shape, scale=1.0):
            return (torch.randn(shape, generator=g, device=runner.device) * scale).to(dtype)

        leaves = (rand(T, N, C), rand(P, T, M, C), rand(C, C, scale=C**-0.5), rand(C))
        return (*(t.requires_grad_() for t in leaves), rand(P, T, C), rand(T, C))

    first = one()
    return [first] + [one() for _ in range(copies_for(nbytes(*first), runner) - 1)]


def _fwd(fn: Callable, next_set: Callable) -> Callable[[], object]:
    def run():
        x, q, w, b, _, _ = next_set()
        with torch.no_grad():
            return fn(x.detach(), q.detach(), w.detach(), b.detach())

    return run


def _fwd_bwd(fn: Callable, next_set: Callable) -> Callable[[], object]:
    def run():
        x, q, w, b, dctx, dcontent = next_set()
        ctx, content = fn(x, q, w, b)
        return torch.autograd.grad((ctx, content), (x, q, w, b), (dctx, dcontent))

    return run


def compression_shapes(sizes: Sizes) -> list[tuple[int, int]]:
    """(T, P), largest first: the target's shape must be timed before any time budget runs out."""
    return sorted(itertools.product(sizes.compress_T, sizes.compress_P), reverse=True)


def run_compression(
    runner: Runner, sizes: Sizes, shapes: list[tuple[int, int]], dtype=torch.bfloat16
) -> None:
    """Time every implementation, fwd+bwd then fwd, at each (T, P) in shapes; rows go to report["compression"]."""
    if not triton_supports(sizes.compress_M, sizes.compress_N, dtype):
        raise ValueError("the compression kernel does not take these sizes")
    if (
        runner.compiled_reference is None
    ):  # one compiled function for every shape (dynamo's automatic dynamic)
        runner.compiled_reference = runner.compile(compress_video_tokens_reference)
    impls = {
        "triton (ours)": compress_video_tokens_triton,
        "ancestor eager": ancestor_token_generation,
        "reference eager": compress_video_tokens_reference,
        "reference torch.compile": runner.compiled_reference,
    }
    for T, P in shapes:
        sets = compression_sets(runner, sizes, T, P, dtype)
        model_bytes = compression_bytes(T, P, sizes, dtype.itemsize)
        x, q, w, b = (t.detach() for t in sets[0][:4])
        with torch.no_grad():
            ours = compress_video_tokens_triton(x, q, w, b)[0]
        for mode, wrap in (("fwd+bwd", _fwd_bwd), ("fwd", _fwd)):
            for name, fn in impls.items():
                row = dict(T=T, P=P, mode=mode, impl=name, input_sets=len(sets), bytes=model_bytes[mode])
                if runner.self_test and name == "reference torch.compile":
                    row["status"] = "ok (ran once; torch.compile skipped on the cpu)"
                runner.timed_case(row, lambda fn=fn, wrap=wrap, sets=sets: wrap(fn, rotating(sets)))
                if mode == "fwd" and row["status"].startswith("ok"):
                    with torch.no_grad():
                        row["rel_diff_vs_ours"] = rel_rms(fn(x, q, w, b)[0], ours)
                runner.report["compression"].append(row)
        print(f"compression T={T} P={P} done ({runner.elapsed():.0f} s)", flush=True)
        runner.write()


def derive_compression(runner: Runner) -> None:
    copy = runner.report["ceilings"].get("copy", {}).get("GB_s")
    rows = runner.report["compression"]
    ancestor = {(r["T"], r["P"], r["mode"]): r["ms"] for r in rows if r["impl"] == "ancestor eager"}
    for r in rows:
        ms = r.get("ms")
        r["GB_s"] = None if ms is None else r["bytes"] / ms / 1e6
        r["pct_of_copy"] = None if ms is None or not copy else 100 * r["GB_s"] / copy
        base = ancestor.get((r["T"], r["P"], r["mode"]))
        r["speedup_vs_ancestor"] = None if ms is None or base is None else base / ms
        if "rel_diff_vs_ours" in r:
            r["agrees"] = r["rel_diff_vs_ours"] <= AGREE_TOL


# ---------------------------------------------------------------------------------------------------------
# 4b. Packed attention timings
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# 5. Targets and the report
# ---------------------------------------------------------------------------------------------------------


def _find(rows: list[dict], **match) -> dict:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), {})


def evaluate_targets(runner: Runner) -> None:
    comp, attn = runner.report["compression"], runner.report["attention"]
    big = dict(T=max(r["T"] for r in comp), P=max(r["P"] for r in comp)) if comp else {}
    bwd = _find(comp, impl="triton (ours)", mode="fwd+bwd", **big).get("speedup_vs_ancestor")
    fwd = _find(comp, impl="triton (ours)", mode="fwd", **big).get("pct_of_copy")
    ours_ms = _find(attn, impl="triton varlen (ours)", mode="fwd+bwd").get("ms")
    sdpa_ms = _find(attn, impl="padded SDPA flash", mode="fwd+bwd").get("ms")
    where = "T={T}, P={P}".format(**big) if big else "?"
    targets = [
        (f"compression fwd+bwd speed-up vs ancestor eager ({where}, bf16)", bwd, ">= 5x", lambda v: v >= 5),
        (f"compression fwd bandwidth, % of copy ({where}, bf16)", fwd, ">= 70%", lambda v: v >= 70),
        (
            "packed attention fwd+bwd: Triton ms / padded SDPA flash ms",
            None if ours_ms is None or sdpa_ms is None else ours_ms / sdpa_ms,
            "<= 1",
            lambda v: v <= 1,
        ),
    ]
    runner.report["targets"] = [
        dict(
            target=name,
            measured=value,
            threshold=threshold,
            passed=NA if runner.self_test else (None if value is None else test(value)),
        )
        for name, value, threshold, test in targets
    ]


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"
    return str(value)


def _ms(row: dict, self_test: bool) -> str:
    return NA if self_test and row.get("ms") is None else _fmt(row.get("ms"), 3)


def render_markdown(report: dict) -> str:
    meta, self_test = report["meta"], report["meta"].get("mode") == "cpu self-test"
    lines = [
        f"# gpu_check: {meta.get('device', '?')}, {meta.get('date', '?')}",
        "",
        f"torch {meta.get('torch')}, triton {meta.get('triton')}, CUDA {meta.get('cuda', 'n/a')}, "
        f"flash-attn installed: {meta.get('flash_attn')}; elapsed {meta.get('elapsed_s')} s "
        f"(timing budget {meta.get('budget_s')} s).",
        "",
        "## Ceilings (measured in this run)",
        "",
        "| ceiling | median ms | rate |",
        "| --- | --- | --- |",
    ]
    copy, gemm = report["ceilings"].get("copy", {}), report["ceilings"].get("gemm", {})
    if copy:
        gb = NA if self_test else f"{_fmt(copy['GB_s'], 0)} GB/s"
        lines.append(
            f"| device-to-device copy, {copy['bytes_read_plus_written'] / 2**30:.3g} GiB read + written "
            f"| {_ms(copy, self_test)} | {gb} |"
        )
    if gemm:
        tf = NA if self_test else f"{_fmt(gemm['TFLOP_s'], 0)} TFLOP/s"
        lines.append(f"| GEMM {gemm['shape']} | {_ms(gemm, self_test)} | {tf} |")
    lines += [
        "",
        "## Correctness on the device (kernel error vs fp64, against the PyTorch reference's in the same dtype)",
        "",
        "| check | output | kernel error | reference error | ratio | pass |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for check in report["correctness"]:
        if not check["outputs"]:
            lines.append(f"| {check['name']} | - | - | - | - | FAIL: {check.get('error', '')} |")
        for name, o in check["outputs"].items():
            lines.append(
                f"| {check['name']} | {name} | {o['kernel_err']:.3e} | {o['reference_err']:.3e} "
                f"| {o['ratio']:.2f} | {_fmt(o['passed'])} |"
            )
    lines += [
        "",
        "## Compression (bf16; GB/s by the byte model below; x = speed-up vs ancestor eager, same T, P, mode)",
        "",
        "| T | P | mode | implementation | median ms | GB/s | % of copy | x vs ancestor | agrees | first call s | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["compression"]:
        lines.append(
            f"| {r['T']} | {r['P']} | {r['mode']} | {r['impl']} | {_ms(r, self_test)} | {_fmt(r.get('GB_s'), 0)} "
            f"| {_fmt(r.get('pct_of_copy'), 1)} | {_fmt(r.get('speedup_vs_ancestor'))} | {_fmt(r.get('agrees'))} "
            f"| {_fmt(r.get('first_call_s'))} | {r['status']} |"
        )
    segs = meta.get("attention_segments", [])
    lines += [
        "",
        f"## Packed causal attention ({sum(segs)} tokens in {len(segs)} segments of {min(segs, default=0)}-"
        f"{max(segs, default=0)}, bf16; x = speed-up vs padded SDPA flash, same mode)",
        "",
        "| mode | implementation | median ms | TFLOP/s | % of GEMM | x vs padded SDPA | agrees | first call s | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["attention"]:
        lines.append(
            f"| {r['mode']} | {r['impl']} | {_ms(r, self_test)} | {_fmt(r.get('TFLOP_s'), 1)} "
            f"| {_fmt(r.get('pct_of_gemm'), 1)} | {_fmt(r.get('speedup_vs_padded_sdpa'))} | {_fmt(r.get('agrees'))} "
            f"| {_fmt(r.get('first_call_s'))} | {r['status']} |"
        )
    lines += [
        "",
        "## Targets (the benchmark's, not the tests')",
        "",
        "| target | measured | threshold | pass |",
        "| --- | --- | --- | --- |",
    ]
    for t in report["targets"]:
        measured = NA if self_test else _fmt(t["measured"])
        lines.append(f"| {t['target']} | {measured} | {t['threshold']} | {_fmt(t['passed'])} |")
    lines += [
        "",
        "Byte model (compression): each input read once, each output written once; fwd = x + q + W_k + b_k + ctx + "
        "content, fwd+bwd adds dctx, dcontent, dx, dq, dW_k, db_k (q' = q W_k has q's size).",
        "FLOP model (attention): per segment 4 L^2 D H / 2 forward (causal), x3.5 for forward+backward; padding and "
        "masked work not counted. Timings: triton.testing.do_bench median (L2 flushed before each call, inputs "
        "rotated among sets totalling >= 3x L2); forward under no_grad; agrees = relative RMS difference of the "
        f"forward output vs our kernel <= {AGREE_TOL}.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument(
        "--self-test", action="store_true", help="correctness + one pass of every case on the CPU"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=360.0,
        help="no new timing case starts after this many seconds from the start (default 360)",
    )
    parser.add_argument("--rep-ms", type=int, default=100, help="do_bench's repetition time per case (ms)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.self_test:
        if not torch.cuda.is_available():
            print(
                "gpu_check.py: no CUDA device; run it on a GPU machine, or use --self-test on the CPU",
                file=sys.stderr,
            )
            return 2
        if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            print("gpu_check.py: unset TRITON_INTERPRET for the GPU run", file=sys.stderr)
            return 2
    sizes = SELF_TEST_SIZES if args.self_test else GPU_SIZES
    runner = Runner(args.out, args.self_test, args.budget_s, args.rep_ms)
    torch.manual_seed(0)
    describe_device(runner)
    shapes = compression_shapes(sizes)
    attention: list[AttentionBench] = []  # built by the first attention section, reused by the second
    sections = [  # the targets' cases first, so a spent time budget skips only the extra rows
        ("ceilings", lambda: measure_ceilings(runner, sizes)),
        ("correctness", lambda: run_correctness(runner, sizes)),
        ("compression (target shape)", lambda: run_compression(runner, sizes, shapes[:1])),
        ("attention setup", lambda: attention.append(prepare_attention(runner, sizes))),
        ("attention fwd+bwd", lambda: attention and run_attention(runner, attention[0], "fwd+bwd")),
        ("compression (other shapes)", lambda: run_compression(runner, sizes, shapes[1:])),
        ("attention fwd", lambda: attention and run_attention(runner, attention[0], "fwd")),
    ]
    for name, section in sections:
        try:
            section()
        except Exception as exc:  # record and go on: the other sections still report
            traceback.print_exc()
            runner.report.setdefault("errors", []).append(f"{name}: {type(exc).__name__}: {exc}"[:500])
        derive_compression(runner)
        derive_attention(runner)
        runner.write()
    evaluate_targets(runner)
    runner.report["all_correct"] = bool(runner.report["correctness"]) and all(
        c["passed"] for c in runner.report["correctness"]
    )
    runner.write()
    print(render_markdown(runner.report), flush=True)
    return 0 if runner.report["all_correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
