"""Correctness on the device: bl-model's kernel tests run by pytest, one row per test case.

The cases live in one place, the pytest tests (kernel error vs fp64 at most 2x the PyTorch reference's error
in the same dtype, forward and every gradient). The GPU run takes the `gpu`-marked ones (the model's shapes:
compression at M=32, C=1408, N=255/256/576 in fp32/fp16/bf16; packed attention with GQA 8/2, head dim 64 and
128, segments of 1-1024 tokens); the CPU self-test takes the interpreted kernel tests in bf16.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from .runner import Runner

ROOT = Path(__file__).resolve().parents[2]
TESTS = (
    "packages/bl-model/tests/test_compress_triton.py",
    "packages/bl-model/tests/test_varlen_attention.py",
)
SELF_TEST_CASES = (
    "(test_error_at_most_twice_the_reference_error or test_triton_matches_reference) and bfloat16"
)


def pytest_command(junit: Path, self_test: bool) -> list[str]:
    select = ["-m", "not gpu", "-k", SELF_TEST_CASES] if self_test else ["-m", "gpu"]
    return [
        sys.executable,
        "-m",
        "pytest",
        *TESTS,
        *select,
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
    ]


def parse_junit(path: Path) -> list[dict]:
    """One row per test case of a JUnit XML file: name, passed, status, seconds."""
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        problem = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        status = "passed" if problem is None else f"{problem.tag}: {problem.get('message', '')}"[:300]
        rows.append(
            dict(
                name=f"{module}::{case.get('name')}",
                passed=problem is None,
                status=status,
                seconds=round(float(case.get("time", 0)), 2),
            )
        )
    return rows


def run_correctness(runner: Runner, timeout_s: float = 900) -> None:
    """Run the kernel tests in a fresh interpreter; their rows go to report["correctness"]."""
    junit = runner.out_dir / "correctness.xml"
    runner.out_dir.mkdir(parents=True, exist_ok=True)
    src = str(
        ROOT / "packages" / "bl-model" / "src"
    )  # a bare checkout (the GPU machine) has no installed bl_model
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        pytest_command(junit, runner.self_test),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    print(proc.stdout[-3000:], proc.stderr[-3000:], sep="", flush=True)
    rows = parse_junit(junit) if junit.is_file() else []
    if proc.returncode not in (0, 1) or not rows:
        rows.append(
            dict(
                name="pytest",
                passed=False,
                status=f"exit {proc.returncode}: {proc.stderr[-300:]}",
                seconds=None,
            )
        )
    runner.report["correctness"] = rows
