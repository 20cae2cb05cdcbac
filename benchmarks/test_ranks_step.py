"""bl-train step time on the CPU: 1 rank x micro-batch 4 vs 2 ranks x micro-batch 2 (the same global batch),
each a real `torchrun ... apps/train` launch of the demo recipe; reports two_ranks_over_one (printed)."""

import json
import subprocess
from pathlib import Path

import pytest

from bl_train.demo import build_demo_data
from bl_train.testing import demo_overrides, launch_env, torchrun_command

STEPS, WARMUP = 12, 2  # steps timed after the first WARMUP (worker start, first allocations)
_STEP_S: dict[int, float] = {}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return build_demo_data(tmp_path_factory.mktemp("demo-data"), n_train=16, n_heldout=2, n_images=16)


def _launch(nproc: int, root: Path, out: Path) -> float:
    """Run the demo for STEPS steps on `nproc` ranks; -> seconds per optimizer step (from metrics.jsonl)."""
    args = demo_overrides(
        root,
        out,
        "--train.max_steps",
        str(STEPS),
        "--train.micro_batch_size",
        str(4 // nproc),
        "--train.eval_every",
        "0",
        "--train.save_every",
        "1000",
        "--data.heldout_shards",
        "[]",
    )
    done = subprocess.run(
        torchrun_command(nproc, *args), capture_output=True, text=True, timeout=900, env=launch_env()
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    elapsed = {
        r["step"]: r["elapsed_s"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    }
    return (elapsed[STEPS] - elapsed[WARMUP]) / (STEPS - WARMUP)


@pytest.mark.parametrize("nproc", [1, 2])
def test_step_time_one_vs_two_ranks_at_global_batch_4(benchmark, demo_root, tmp_path, nproc):
    """Wall time of a whole launch (benchmark) and its steady step time (extra_info); 1 thread per rank."""
    if benchmark.disabled:
        pytest.skip("two torchrun launches: runs only with --benchmark-enable")
    _STEP_S[nproc] = benchmark.pedantic(_launch, args=(nproc, demo_root, tmp_path / "run"), rounds=1)
    benchmark.extra_info["step_s"] = round(_STEP_S[nproc], 4)
    if nproc == 2 and 1 in _STEP_S:
        ratio = _STEP_S[2] / _STEP_S[1]
        benchmark.extra_info["two_ranks_over_one"] = round(ratio, 3)
        print(
            f"\nstep time at global batch 4: 1 rank {_STEP_S[1]:.3f} s, 2 ranks {_STEP_S[2]:.3f} s, "
            f"2 ranks / 1 rank = {ratio:.2f}"
        )
