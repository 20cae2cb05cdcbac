"""The compile gate (`python -m benchmarks.gpu_bench --compile-only`): every Triton kernel of bl-model at every
launch configuration, compiled for sm_80 and sm_90 with the real compiler, no spills in 16-bit, shared memory
within each arch's limit. Results are cached by source hash in ~/.cache/bl-compile-gate, so a run after an
unchanged kernel costs seconds; a cold cache costs a few minutes on two cores."""

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import torch
from gpu_bench import compile_gate

from bl_model.ops import compress, varlen_attention

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONUNBUFFERED": "1"}


def _gate(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "benchmarks.gpu_bench", "--compile-only", *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1800)


def test_every_kernel_config_compiles_for_sm80_and_sm90_within_limits(tmp_path: Path) -> None:
    proc = _gate("--arch", "80,90", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((tmp_path / "compile.json").read_text())
    assert report["failures"] == [] and report["archs"] == [80, 90]

    cases = compile_gate.all_cases()
    expected = {(c.kernel, c.dtype, c.label, arch) for c in cases for arch in (80, 90)}
    rows = report["rows"]
    assert {(r["kernel"], r["dtype"], r["config"], r["arch"]) for r in rows} == expected
    assert len(rows) == len(expected)
    assert {c.kernel for c in cases} == {
        "compress_fwd",
        "compress_bwd_scores",
        "compress_bwd_dx",
        "attn_fwd",
        "attn_bwd_dkdv",
        "attn_bwd_dq",
    }
    for r in rows:
        assert r["registers"] <= 255 and r["shared_bytes"] <= {80: 163 << 10, 90: 227 << 10}[r["arch"]], r
        assert r["dynamic_shared_bytes"] > 0, r  # tl.dot tiles live in shared memory: Triton requested some
        if r["dtype"] != "fp32":
            assert r["local_bytes"] == r["stack_bytes"] == 0, r
        cubin = tmp_path / f"sm_{r['arch']}" / f"{r['kernel']}-{r['dtype']}-{r['config']}.cubin"
        assert cubin.read_bytes()[:4] == b"\x7fELF", cubin
    # the cubins are for the arch their folder names (the wheel's cuobjdump reads the ELF's target)
    tool = compile_gate.tools_dir() / "cuobjdump"
    for arch in (80, 90):
        some = sorted((tmp_path / f"sm_{arch}").glob("attn_fwd-bf16-*.cubin"))[0]
        listing = subprocess.run(
            [tool, "--list-elf", some], capture_output=True, text=True, check=True
        ).stdout
        assert f".sm_{arch}" in listing, listing
    assert "| compress_fwd | bf16 |" in (tmp_path / "compile.md").read_text()


def test_the_cases_cover_every_launch_config_the_ops_can_return() -> None:
    """Random supported shapes (not just powers of two) land on a configuration the gate compiles."""
    labels = {(c.kernel, c.dtype, c.label) for c in compile_gate.all_cases()}
    dtype_name = {v: k for k, v in compile_gate.DTYPES.items()}
    rng = random.Random(0)
    for _ in range(300):
        M, N, dtype = rng.randint(1, 80), rng.randint(1, 1200), rng.choice(list(dtype_name))
        if not compress.triton_supports(M, N, dtype):
            continue
        cfg = compress._launch_config(N, M, dtype)
        name = dtype_name[dtype]
        assert ("compress_fwd", name, compile_gate._case("compress_fwd", name, cfg, {}).label) in labels
        dx = compile_gate._case("compress_bwd_dx", name, compress._dx_launch_config(cfg), {}).label
        assert ("compress_bwd_dx", name, dx) in labels
        for dq, dxx in ((True, True), (True, False), (False, True)):
            variant = dict(NEED_DQ=dq, NEED_DX=dxx) | cfg
            assert ("compress_bwd_scores", name, compile_gate._case("x", name, variant, {}).label) in labels
    for D, dtype, backward in itertools.product((64, 80, 96, 128), dtype_name, (False, True)):
        for max_seqlen in (1, 5, 16, 31, 32, 100, 4096):
            cfg = varlen_attention._launch_config(
                torch.empty(0, 1, D, dtype=dtype), max_seqlen, None, backward
            )
            label = compile_gate._case("x", dtype_name[dtype], dict(GROUP=1) | cfg, {}).label
            kernel = "attn_bwd_dq" if backward else "attn_fwd"
            assert (kernel, dtype_name[dtype], label) in labels


def test_the_gate_catches_a_real_spill_and_an_unknown_arch(tmp_path: Path) -> None:
    """The 32 x 1024 score backward (once allowed for 16-bit inputs) spills on sm_90: the gate must say so.

    Its row comes through the gate's cache (keyed by the source hash, arch, options and Triton version), as the
    gate's own rows do: a changed kernel or Triton is compiled again, an unchanged one costs seconds."""
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); from gpu_bench import compile_gate as g\n"
        "cfg = dict(NEED_DQ=True, NEED_DX=True, BLOCK_M=32, BLOCK_N=1024, BLOCK_C=16, DOT_PRECISION='tf32', num_warps=16)\n"
        "case = g._case('compress_bwd_scores', 'bf16', cfg, dict(F=64, N=1024, M=32, C=1408, P=2) | cfg)\n"
        "row, _ = g.compile_case(case, 90, g.default_cache_dir())\n"
        "print(g.problems(dict(row, dtype='bf16', arch=90)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "spills" in proc.stdout, proc.stdout

    bad = _gate("--arch", "75", "--out", str(tmp_path / "out"))
    assert bad.returncode == 2 and "--arch" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "out" / "compile.json").exists()


def test_problems_rules() -> None:
    row = dict(dtype="bf16", arch=80, registers=255, local_bytes=0, stack_bytes=0, shared_bytes=163 << 10)
    assert compile_gate.problems(row) == []
    assert compile_gate.problems(row | dict(shared_bytes=(163 << 10) + 1)) and compile_gate.problems(
        row | dict(registers=256)
    )
    assert compile_gate.problems(row | dict(local_bytes=8))
    assert (
        compile_gate.problems(row | dict(dtype="fp32", local_bytes=8)) == []
    )  # fp32 is for checking, not speed
    assert compile_gate.problems(row | dict(arch=90, shared_bytes=200 << 10)) == []
