"""What every rank must agree on: summed statistics, the fault-injection hook for the multi-rank tests, and the
world size a checkpoint was written with.

Every collective here is entered by all ranks in the same order; a rank never decides alone to skip work that
the others would wait for.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from bl_model import IGNORE_INDEX

FAULT_ENV = "BL_TRAIN_FAULTS"
_FAULT = re.compile(r"(nonfinite|empty)@rank(\d+):step(\d+)(?::micro(\d+))?")


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks of a float64 vector (V,) -> (V,); NaN/inf on any rank propagate."""
    total = values.detach().to(torch.float64).clone()
    if torch.distributed.get_world_size() > 1:
        device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
        total = total.to(device)
        torch.distributed.all_reduce(total)
    return total.cpu()


def label_tokens(batch: dict[str, torch.Tensor] | None) -> int:
    """Scored tokens of a micro-batch: labels[:, 1:] != IGNORE_INDEX (the causal-LM loss shifts by one)."""
    return 0 if batch is None else int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


class Faults:
    """Faults injected into one rank by `BL_TRAIN_FAULTS`, a test hook: comma-separated `KIND@rankR:stepS` or
    `KIND@rankR:stepS:microM` (steps and micro-steps counted from 1, as in metrics.jsonl). KIND `nonfinite`: the
    loss of rank R at that step (or only at its micro-step M) becomes NaN; `empty`: every sample of rank R's
    micro-batches there is dropped, as when all are over budget. Unset: none."""

    def __init__(self, rank: int, spec: str | None = None):
        spec = os.environ.get(FAULT_ENV, "") if spec is None else spec
        self._at: set[tuple[str, int, int | None]] = set()
        for item in filter(None, (s.strip() for s in spec.split(","))):
            match = _FAULT.fullmatch(item)
            if match is None:
                raise ValueError(
                    f"{FAULT_ENV}: {item!r} is not KIND@rankR:stepS[:microM] with KIND nonfinite or empty"
                )
            if int(match[2]) == rank:
                self._at.add((match[1], int(match[3]), int(match[4]) if match[4] else None))

    def hits(self, kind: str, step: int, accum: int) -> list[bool]:
        """For each of `step`'s `accum` micro-steps: is a `kind` fault injected there?"""
        whole = (kind, step, None) in self._at
        return [whole or (kind, step, micro) in self._at for micro in range(1, accum + 1)]


def saved_world_size(tag_dir: Path) -> int | None:
    """The data-parallel world size a DeepSpeed checkpoint was written with (one ZeRO optimizer shard per
    rank), or None when it holds no ZeRO shards (stage 0)."""
    shards = list(Path(tag_dir).glob("*zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    return len(shards) or None


def check_world_size(tag_dir: Path, world: int) -> None:
    """Raise when `tag_dir` was saved by a different number of ranks (ZeRO shards cannot be re-partitioned here)."""
    saved = saved_world_size(tag_dir)
    if saved is not None and saved != world:
        raise RuntimeError(
            f"checkpoint {tag_dir} was written by {saved} ranks but this run has {world}; resume it on {saved} ranks"
        )
