"""The device's description and two ceilings measured in the same run: copy bandwidth and bf16 GEMM rate."""

from __future__ import annotations

import datetime as dt
import platform

import torch
import triton

from bl_model.ops import varlen_attention as va

from .runner import Runner, Sizes, nbytes


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
