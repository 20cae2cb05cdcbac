"""The compile gate: every Triton kernel of bl-model, at every launch configuration its `_launch_config`
returns, compiled ahead of time for GPUs that are not here, and checked for spills, shared memory, registers.

`triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32))` runs the
real compiler (LLVM + ptxas) on the CPU; the wheel's `cuobjdump --dump-resource-usage` reads the cubin's
registers, local memory (spills) and static shared memory, and Triton's metadata gives the dynamic shared
memory the launch requests. Arguments are specialised as the model launches them (Triton's own rules on
example values: pointers 16-byte aligned, shapes and strides multiples of 16, unit strides constant).

Results are cached by the compile's source hash (`ASTSource.hash()`: the kernel's source and its callees,
signature, constants) with the arch, options and Triton version, so an unchanged kernel is not recompiled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

# Opt-in shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin), bytes.
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024, 100: 227 * 1024}
MAX_REGISTERS = 255
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
HEAD_DIMS = (64, 80, 96, 128)


@dataclass(frozen=True)
class Case:
    """One kernel at one launch configuration: what is compiled (plain data, so worker processes can take it)."""

    kernel: str  # a key of KERNELS
    dtype: str  # fp32 / fp16 / bf16
    config: tuple[tuple[str, object], ...]  # the launch's constexprs and options, in a fixed order
    shape: tuple[tuple[str, int], ...]  # example sizes the runtime arguments are made from

    @property
    def label(self) -> str:
        """The config as a file-name part, e.g. BLOCK_M32_BLOCK_N256_BLOCK_C32_w8."""
        short = {"num_warps": "w", "num_stages": "s", "DOT_PRECISION": "", "PRECISION": ""}
        parts = [f"{short.get(k, k)}{v}" for k, v in self.config if k not in ("DOT_PRECISION", "PRECISION")]
        return "_".join(parts).replace("True", "1").replace("False", "0")


# ---------------------------------------------------------------------------------------------------------
# The kernels: how each is launched (example runtime arguments) and every configuration it can be launched at.
# ---------------------------------------------------------------------------------------------------------


def _t(dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(16, dtype=dtype)  # a pointer argument: only its dtype and alignment matter


def _compress_args(kernel: str, dtype: torch.dtype, s: dict) -> dict:
    """Example arguments as `_compress_forward` / `_compress_backward` pass them: x (F, N, C) contiguous."""
    F_, N, M, C, P = s["F"], s["N"], s["M"], s["C"], s["P"]
    x, f32 = _t(dtype), _t(torch.float32)
    strides = dict(stride_xf=N * C, stride_xn=C, stride_xc=1)
    common = dict(F=F_, N=N, M=M, C=C)
    if kernel == "compress_fwd":
        return dict(x_ptr=x, qk_ptr=x, ctx_ptr=x, content_ptr=x, **common, **strides, scale=C**-0.5)
    if kernel == "compress_bwd_scores":
        need_dq, need_dx = s["NEED_DQ"], s["NEED_DX"]
        return dict(
            x_ptr=x,
            qk_ptr=x,
            dctx_ptr=x,
            dqk_ptr=x if need_dq else None,
            ds_ptr=f32 if need_dx else None,
            w_ptr=f32 if need_dx else None,
            **common,
            **strides,
            scale=C**-0.5,
        )
    return dict(qk_ptr=x, dctx_ptr=x, dcontent_ptr=x, ds_ptr=f32, w_ptr=f32, dx_ptr=x, P=P, **common)


def _attention_args(kernel: str, dtype: torch.dtype, s: dict) -> dict:
    """Example arguments as `VarlenAttentionFunction` passes them: q, k, v (T, H, D) contiguous, LSE (H, T)."""
    T, H, D = s["T"], s["H"], s["D"]
    x, f32, cu = _t(dtype), _t(torch.float32), _t(torch.int32)
    qkv = dict(Q=x, K=x, V=x)
    st = dict(stride_qt=H * D, stride_qh=D, stride_kt=H * D, stride_kh=D, stride_vt=H * D, stride_vh=D)
    if kernel == "attn_fwd":
        return dict(**qkv, O=x, LSE=f32, CU=cu, **st, stride_ot=H * D, stride_oh=D, stride_lh=T, qk_scale=0.1)
    grads = dict(DO=x, LSE=f32, DELTA=f32)
    scales = dict(scale=0.1, qk_scale=0.1)
    do_st = dict(stride_dot=H * D, stride_doh=D)
    if kernel == "attn_bwd_dkdv":
        return dict(
            **qkv,
            **grads,
            DK=x,
            DV=x,
            CU=cu,
            **st,
            **do_st,
            stride_dkt=H * D,
            stride_dkh=D,
            stride_dvt=H * D,
            stride_dvh=D,
            stride_lh=T,
            **scales,
        )
    return dict(
        **qkv, **grads, DQ=x, CU=cu, **st, **do_st, stride_dqt=H * D, stride_dqh=D, stride_lh=T, **scales
    )


def _kernel_fns() -> dict[str, Callable]:
    from bl_model.ops import compress, varlen_attention

    return {
        "compress_fwd": compress._compress_fwd_kernel,
        "compress_bwd_scores": compress._compress_bwd_scores_kernel,
        "compress_bwd_dx": compress._compress_bwd_dx_kernel,
        "attn_fwd": varlen_attention._fwd_kernel,
        "attn_bwd_dkdv": varlen_attention._bwd_dkdv_kernel,
        "attn_bwd_dq": varlen_attention._bwd_dq_kernel,
    }


def _case(kernel: str, dtype: str, cfg: dict, shape: dict) -> Case:
    return Case(kernel, dtype, tuple(cfg.items()), tuple(shape.items()))


def compression_cases() -> Iterator[Case]:
    """Every (BLOCK_M, BLOCK_N) that `triton_supports` admits, per dtype; the score kernel in its three
    gradient variants (dq and dx, dq only, dx only) and the dx kernel at its own tiles."""
    from bl_model.ops import compress

    sizes = [1 << k for k in range(11)]  # every block: M, N = 1 .. 1024
    for name, dtype in DTYPES.items():
        for M in sizes:
            for N in sizes:
                if not compress.triton_supports(M, N, dtype):
                    continue
                cfg = compress._launch_config(N, M, dtype)
                shape = dict(F=64, N=cfg["BLOCK_N"], M=cfg["BLOCK_M"], C=1408, P=2)  # one shape per config
                yield _case("compress_fwd", name, cfg, shape)
                for need_dq, need_dx in ((True, True), (True, False), (False, True)):
                    variant = dict(NEED_DQ=need_dq, NEED_DX=need_dx) | cfg
                    yield _case("compress_bwd_scores", name, variant, shape | variant)
                dx_cfg = compress._dx_launch_config(cfg)
                yield _case("compress_bwd_dx", name, dx_cfg, shape | dict(N=dx_cfg["BLOCK_N"]))


def attention_cases() -> Iterator[Case]:
    """Head dims 64, 80, 96, 128; every block the heuristic picks (by the longest segment), forward and backward."""
    from bl_model.ops import varlen_attention

    for name, dtype in DTYPES.items():
        for D in HEAD_DIMS:
            q = torch.empty(0, 1, D, dtype=dtype)
            for backward, kernels in ((False, ("attn_fwd",)), (True, ("attn_bwd_dkdv", "attn_bwd_dq"))):
                configs = {
                    tuple(varlen_attention._launch_config(q, L, None, backward).items())
                    for L in (1, 17, 33, 4096)
                }
                for cfg in sorted(configs):
                    for kernel in kernels:
                        yield _case(kernel, name, dict(GROUP=1) | dict(cfg), dict(T=16384, H=40, D=D))


def all_cases() -> list[Case]:
    """Each distinct (kernel, dtype, config) once, in a fixed order."""
    return list(dict.fromkeys([*compression_cases(), *attention_cases()]))


# ---------------------------------------------------------------------------------------------------------
# Compiling one case (in a worker process) and reading its resources.
# ---------------------------------------------------------------------------------------------------------


def tools_dir() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def supported_archs() -> list[int]:
    """80 and 90 always; 100 when the wheel ships a Blackwell ptxas."""
    return [80, 90] + ([100] if (tools_dir() / "ptxas-blackwell").exists() else [])


def _source(case: Case):
    """The ASTSource and launch options of a case, specialised by Triton's own rules on the example arguments."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend
    from triton.compiler import ASTSource

    fn = _kernel_fns()[case.kernel]
    cfg, shape = dict(case.config), dict(case.shape)
    options = {k: cfg.pop(k) for k in ("num_warps", "num_stages") if k in cfg}
    builder = _compress_args if case.kernel.startswith("compress") else _attention_args
    args = builder(case.kernel, DTYPES[case.dtype], shape)
    signature, constexprs, attrs = {}, {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in cfg:
            signature[name], constexprs[name] = "constexpr", cfg[name]
            continue
        kind, attr = native_specialize_impl(BaseBackend, args[name], False, True, True)
        signature[name] = kind
        if kind == "constexpr":
            constexprs[name] = args[name]
        elif attr:
            attrs[(index,)] = BaseBackend.parse_attr(attr)
    return ASTSource(fn, signature, constexprs, attrs), options


def parse_resource_usage(text: str) -> dict:
    """cuobjdump --dump-resource-usage -> registers, local (spill) bytes, stack bytes, static shared bytes."""
    match = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    if match is None:
        raise RuntimeError(f"cuobjdump printed no resource line:\n{text}")
    reg, stack, shared, local = (int(v) for v in match.groups())
    return dict(registers=reg, stack_bytes=stack, static_shared_bytes=shared, local_bytes=local)


def compile_case(case: Case, arch: int, cache_dir: Path) -> tuple[dict, bytes]:
    """(row, cubin) of one case on one arch, from the cache when its source hash was compiled before."""
    import triton
    from triton.backends.compiler import GPUTarget

    src, options = _source(case)
    key_text = f"{src.hash()}-{arch}-{sorted(options.items())}-{triton.__version__}"
    key = hashlib.sha256(key_text.encode()).hexdigest()
    row_path, cubin_path = cache_dir / f"{key}.json", cache_dir / f"{key}.cubin"
    if row_path.is_file() and cubin_path.is_file():
        return json.loads(row_path.read_text()) | {"cached": True}, cubin_path.read_bytes()
    start = time.perf_counter()
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    cubin = compiled.asm["cubin"]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f"{key}.{os.getpid()}.tmp"
    tmp.write_bytes(cubin)
    usage = subprocess.run(
        [str(tools_dir() / "cuobjdump"), "--dump-resource-usage", str(tmp)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    row = parse_resource_usage(usage) | dict(dynamic_shared_bytes=int(compiled.metadata.shared))
    row["shared_bytes"] = row["static_shared_bytes"] + row["dynamic_shared_bytes"]
    row["compile_s"] = round(time.perf_counter() - start, 2)
    os.replace(tmp, cubin_path)  # atomic: concurrent gates never read half a cubin
    row_path.write_text(json.dumps(row))
    return row | {"cached": False}, cubin


def problems(row: dict) -> list[str]:
    """What the gate rejects in one row: spills in fp16/bf16, shared memory past the arch's limit, > 255 registers."""
    found = []
    if row["dtype"] != "fp32" and (row["local_bytes"] or row["stack_bytes"]):
        found.append(f"spills: {row['local_bytes']} B local, {row['stack_bytes']} B stack")
    limit = SHARED_LIMIT[row["arch"]]
    if row["shared_bytes"] > limit:
        found.append(f"shared memory {row['shared_bytes']} B > {limit} B (sm_{row['arch']})")
    if row["registers"] > MAX_REGISTERS:
        found.append(f"{row['registers']} registers > {MAX_REGISTERS}")
    return found


def _work(job: tuple[Case, int, str, str]) -> dict:
    case, arch, cache_dir, out_dir = job
    row, cubin = compile_case(case, arch, Path(cache_dir))
    path = Path(out_dir) / f"sm_{arch}" / f"{case.kernel}-{case.dtype}-{case.label}.cubin"
    path.write_bytes(cubin)
    row = dict(kernel=case.kernel, arch=arch, dtype=case.dtype, config=case.label) | row
    row["problems"] = problems(row)
    return row


def _worker_init() -> None:
    os.environ["TRITON_INTERPRET"] = "0"  # real compilation, whatever the parent's environment says


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bl-compile-gate"


def run_gate(out_dir: Path, archs: list[int], cache_dir: Path, workers: int | None = None) -> dict:
    """Compile every case for every arch into out_dir; write out_dir/compile.json; return the report."""
    import triton
    from tqdm import tqdm

    for arch in archs:
        (out_dir / f"sm_{arch}").mkdir(parents=True, exist_ok=True)
    jobs = [(case, arch, str(cache_dir), str(out_dir)) for arch in archs for case in all_cases()]
    start = time.perf_counter()
    with ProcessPoolExecutor(workers or os.cpu_count(), initializer=_worker_init) as pool:
        rows = list(tqdm(pool.map(_work, jobs), total=len(jobs), desc="compile gate", unit="kernel"))
    report = dict(
        triton=triton.__version__,
        archs=archs,
        shared_limit_bytes={str(a): SHARED_LIMIT[a] for a in archs},
        max_registers=MAX_REGISTERS,
        elapsed_s=round(time.perf_counter() - start, 1),
        compiled=sum(not r["cached"] for r in rows),
        cached=sum(r["cached"] for r in rows),
        rows=rows,
        failures=[r for r in rows if r["problems"]],
    )
    (out_dir / "compile.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def render_table(report: dict) -> str:
    """Markdown: one line per (kernel, dtype, config), registers / local / shared KB per arch."""
    archs = report["archs"]
    by_key: dict[tuple, dict] = {}
    for r in report["rows"]:
        by_key.setdefault((r["kernel"], r["dtype"], r["config"]), {})[r["arch"]] = r
    head = (
        "| kernel | dtype | config | "
        + " | ".join(f"sm_{a} regs / spill B / shared KB" for a in archs)
        + " |"
    )
    lines = [head, "| --- " * (3 + len(archs)) + "|"]
    for (kernel, dtype, config), per_arch in by_key.items():
        cells = [
            f"{r['registers']} / {r['local_bytes'] + r['stack_bytes']} / {r['shared_bytes'] / 1024:.1f}"
            + (" ✗" if r["problems"] else "")
            for r in (per_arch[a] for a in archs)
        ]
        lines.append(f"| {kernel} | {dtype} | {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary(report: dict) -> str:
    n, bad = len(report["rows"]), report["failures"]
    text = (
        f"compile gate: {n} kernels x archs ({report['compiled']} compiled, {report['cached']} cached) "
        f"for sm_{', sm_'.join(map(str, report['archs']))} in {report['elapsed_s']} s: "
        + ("all pass" if not bad else f"{len(bad)} FAIL")
    )
    for r in bad:
        text += f"\n  {r['kernel']} {r['dtype']} {r['config']} sm_{r['arch']}: {'; '.join(r['problems'])}"
    return text


def clean_out(out_dir: Path) -> None:
    """Old cubins of configurations that no longer exist must not linger next to a new compile.json."""
    for sub in out_dir.glob("sm_*"):
        if sub.is_dir():
            shutil.rmtree(sub)
