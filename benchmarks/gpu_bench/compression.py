"""Compression timings: our Triton kernel, LLaMA-VID's eager maths, the reference eager and compiled.

Byte model (the fewest bytes: each input read once, each output written once; s = bytes per element):
forward = s * (F*N*C [x] + P*F*M*C [q, the size of q' = q W_k] + C*C + C [W_k, b_k] + P*F*C + F*C [ctx, content]);
forward+backward adds the reads of dctx, dcontent and the writes of dx, dq, dW_k, db_k.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from _ancestors import ancestor_token_generation

from bl_model.ops.compress import (
    compress_video_tokens_reference,
    compress_video_tokens_triton,
    triton_supports,
)

from .report import AGREE_TOL
from .runner import Runner, Sizes, copies_for, nbytes, rel_rms, rotating


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
