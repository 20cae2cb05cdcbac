"""A non-interactive `apps/train` run (stderr is a pipe, as under CI, Slurm or nohup): a few progress lines."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[3]


def test_a_non_tty_run_writes_a_few_progress_lines(demo_args, tmp_path):
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    args = demo_args(
        tmp_path / "run", "--train.max_steps", "30", "--train.eval_every", "0", "--train.save_every", "30"
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "apps" / "train"),
            "--recipe",
            str(ROOT / "configs" / "demo.yaml"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    progress = [line for line in lines if "bl_data.progress: demo " in line]
    assert 3 <= len(progress) <= 15, lines  # every 3 steps (a tenth of 30), or every 30 s on a slow machine
    assert "30/30 step" in progress[-1] and "loss=" in progress[-1] and "tok_s=" in progress[-1]
    assert len(lines) < 50, lines  # nothing else writes a line per step
