"""`apps/train` on the demo data, launched the way users launch it: the command lines bl-train's tests and the
rank benchmark share (`torchrun --standalone --nproc-per-node N apps/train --recipe configs/demo.yaml ...`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]  # the checkout: ROOT/packages/bl-train/src/bl_train/testing.py
TRAIN_APP = ROOT / "apps" / "train"
DEMO_RECIPE = ROOT / "configs" / "demo.yaml"
_LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def demo_overrides(root: Path, out: Path, *extra: str) -> list[str]:
    """CLI overrides of the demo recipe: the demo data built under `root`, the run written to `out`."""
    return [
        *("--data.blift_shards", f"[{root / 'shards'}]"),
        *("--data.instruction_json", str(root / "instructions.json")),
        *("--data.media_root", str(root)),
        *("--data.processor", str(root / "processor")),
        *("--data.heldout_shards", f"[{root / 'heldout'}]"),
        *("--model.pretrained", str(root / "model")),
        *("--train.output_dir", str(out)),
        *extra,
    ]


def torchrun_command(nproc: int, *args: str) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc-per-node nproc apps/train --recipe demo.yaml args`
    (standalone: a free rendezvous port of its own, so launches can run side by side)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    return [*launcher, str(TRAIN_APP), "--recipe", str(DEMO_RECIPE), *args]


def launch_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment minus a launcher's rank variables (a test may run under one), one thread per
    rank, plus `extra`."""
    clean = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    return {**clean, "OMP_NUM_THREADS": "1", **(extra or {})}
