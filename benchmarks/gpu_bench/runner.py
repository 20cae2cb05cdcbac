"""Sizes for the GPU run and the CPU self-test, the timing runner, and small tensor helpers."""

from __future__ import annotations

import itertools
import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import triton.testing

from .report import render_markdown


@dataclass(frozen=True)
class Sizes:
    """Shapes of every timing case; the GPU run and the CPU self-test go through the same code with these."""

    copy_bytes: int  # each of the copy's two buffers
    gemm_n: int
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
    step_layers: int  # the training step: decoder layers at the model's width
    step_tokens: int


GPU_SIZES = Sizes(
    copy_bytes=1 << 30,
    gemm_n=8192,
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
    step_layers=4,
    step_tokens=8192,  # the 13b recipe's micro-batch: 4 packed samples of 2048 tokens
)

SELF_TEST_SIZES = Sizes(
    copy_bytes=1 << 20,
    gemm_n=64,
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
    step_layers=2,
    step_tokens=64,
)


class Runner:
    """Times cases, keeps the time budget, and writes gpu_check.json / gpu_check.md after every section."""

    def __init__(self, out_dir: Path, self_test: bool, budget_s: float, rep_ms: int):
        self.out_dir, self.self_test, self.budget_s, self.rep_ms = out_dir, self_test, budget_s, rep_ms
        self.device = torch.device("cpu" if self_test else "cuda")
        self.t0 = time.perf_counter()
        sections = ("correctness", "compression", "attention", "train_step", "targets")
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
    """Relative RMS difference ||a - b|| / ||b|| in fp64."""
    a, b = a.double(), b.double()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()
