"""The command line and the order of the sections (the targets' cases first)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

import torch

from . import compile_gate
from .attention import AttentionBench, derive_attention, prepare_attention, run_attention
from .ceilings import describe_device, measure_ceilings
from .compression import compression_shapes, derive_compression, run_compression
from .correctness import run_correctness
from .report import evaluate_targets, render_markdown
from .runner import GPU_SIZES, SELF_TEST_SIZES, Runner
from .train_step import run_train_step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gpu_check.py", description="One-call GPU check of bl-model's Triton kernels."
    )
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
    parser.add_argument(
        "--compile-only",
        action="store_true",
        help="no GPU needed: compile every kernel config for --arch, write cubins and compile.json, check resources",
    )
    parser.add_argument(
        "--arch", default="80,90", help="--compile-only: comma-separated SM versions (80,90,100)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="--compile-only: result cache (default ~/.cache/bl-compile-gate)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="--compile-only: processes (default: every core)"
    )
    args = parser.parse_args(argv)
    if args.compile_only:
        args.archs = _parse_archs(parser, args.arch)
    return args


def _parse_archs(parser: argparse.ArgumentParser, text: str) -> list[int]:
    """--arch "80,90" -> [80, 90]; anything else is a one-line error (exit 2)."""
    known = compile_gate.supported_archs()
    archs = [int(a) for a in text.split(",") if a.strip().isdigit()]
    if not archs or len(archs) != len(text.split(",")) or set(archs) - set(known):
        print(
            f"{parser.prog}: error: --arch: expected comma-separated SM versions among {known}, got {text!r}",
            file=sys.stderr,
        )
        sys.exit(2)
    return archs


def compile_only(args: argparse.Namespace) -> int:
    """Exit status 0 when every configuration passes the gate, 1 when one does not."""
    compile_gate.clean_out(args.out)
    report = compile_gate.run_gate(
        args.out, args.archs, args.cache_dir or compile_gate.default_cache_dir(), args.workers
    )
    (args.out / "compile.md").write_text(compile_gate.render_table(report))
    print(compile_gate.summary(report), flush=True)
    return 1 if report["failures"] else 0


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 when every correctness test passed, 1 when one failed, 2 without CUDA (no --self-test)."""
    args = parse_args(argv)
    if args.compile_only:
        return compile_only(args)
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
        ("correctness", lambda: run_correctness(runner)),
        ("compression (target shape)", lambda: run_compression(runner, sizes, shapes[:1])),
        ("attention setup", lambda: attention.append(prepare_attention(runner, sizes))),
        ("attention fwd+bwd", lambda: attention and run_attention(runner, attention[0], "fwd+bwd")),
        ("compression (other shapes)", lambda: run_compression(runner, sizes, shapes[1:])),
        ("attention fwd", lambda: attention and run_attention(runner, attention[0], "fwd")),
        ("training step", lambda: run_train_step(runner, sizes)),
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
    evaluate_targets(runner.report, runner.self_test)
    runner.report["all_correct"] = bool(runner.report["correctness"]) and all(
        c["passed"] for c in runner.report["correctness"]
    )
    runner.write()
    print(render_markdown(runner.report), flush=True)
    return 0 if runner.report["all_correct"] else 1
