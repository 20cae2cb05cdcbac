"""`gpu_check.py --self-test`: the GPU check's correctness part (bl-model's interpreted kernel tests, run by
pytest), and one pass of every timing case, on the CPU under TRITON_INTERPRET=1 at tiny shapes (a plain test)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent / "gpu_check.py"


def test_gpu_check_self_test(tmp_path: Path) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--self-test", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = {"meta", "ceilings", "correctness", "compression", "attention", "train_step", "targets"}
    assert sections <= report.keys()
    assert report["meta"]["mode"] == "cpu self-test" and "errors" not in report

    # the correctness section ran bl-model's interpreted kernel tests (bf16), and every one passed
    names = [c["name"] for c in report["correctness"]]
    assert sum(n.startswith("test_compress_triton::test_error_at_most_twice") for n in names) == 4, names
    assert sum(n.startswith("test_varlen_attention::test_triton_matches_reference") for n in names) == 2, (
        names
    )
    for check in report["correctness"]:
        assert check["passed"] and check["status"] == "passed" and "bfloat16" in check["name"], check
    assert report["all_correct"] is True

    # every timing case ran once (flex_attention's backward does not exist on the CPU) and agrees with our kernel
    compression, attention = report["compression"], report["attention"]
    assert len(compression) == 2 * 2 * 2 * 4  # T x P x mode x implementation
    assert {r["impl"] for r in attention} >= {"triton varlen (ours)", "padded SDPA flash"}
    for row in compression + attention:
        assert row["status"].startswith("ok") or "flex_attention has no backward" in row["status"], row
        assert row["ms"] is None
        if row["mode"] == "fwd":
            assert row["agrees"], row
    assert (
        all(t["passed"] == "n/a (cpu self-test)" for t in report["targets"]) and len(report["targets"]) == 3
    )

    # the training step ran with and without checkpointing, with the planner's prediction beside it
    steps = report["train_step"]
    assert [r["checkpointing"] for r in steps] == [True, False]
    for r in steps:
        assert r["status"] == "ok (ran once)" and r["planned_GiB"] > 0 and "measured_GiB" not in r, r

    markdown = (tmp_path / "gpu_check.md").read_text()
    assert markdown.startswith("# gpu_check: CPU") and "n/a (cpu self-test)" in markdown
    for heading in (
        "## Ceilings",
        "## Correctness",
        "## Compression",
        "## Packed causal attention",
        "## Training step",
        "## Targets",
    ):
        assert heading in markdown


def test_gpu_run_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the GPU run would start")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()
