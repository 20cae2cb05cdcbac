"""Checkpoints: save with a manifest, pick the one to resume from (falling back past damaged ones), restore exactly.

A checkpoint is a DeepSpeed tag folder `checkpoints/step-N` plus `manifest.json` (every file's size), written by
rank 0 once every rank's files are on disk. A folder whose manifest is missing (the save was interrupted) or
disagrees with the files (truncated, deleted) is skipped by `--train.resume auto`, which takes the newest
checkpoint that verifies and says which ones it skipped and why.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

MANIFEST = "manifest.json"
_PREFIX = "step-"


class CheckpointNotFound(FileNotFoundError):
    """An explicitly named checkpoint is absent or damaged; the message is one line listing the tags present."""


def tags(ckpt_dir: Path) -> list[str]:
    """`step-N` folders under `ckpt_dir`, oldest first."""
    steps = [p.name[len(_PREFIX) :] for p in Path(ckpt_dir).glob(f"{_PREFIX}*") if p.is_dir()]
    return [f"{_PREFIX}{n}" for n in sorted((s for s in steps if s.isdigit()), key=int)]


def latest_tag(ckpt_dir: Path) -> str | None:
    """The tag DeepSpeed's `latest` file names (it may name a folder that no longer exists)."""
    latest = Path(ckpt_dir) / "latest"
    return latest.read_text().strip() if latest.is_file() else None


def problem(folder: Path) -> str | None:
    """Why the checkpoint in `folder` cannot be loaded (missing, no manifest, a file missing or resized), else None."""
    if not folder.is_dir():
        return "no such folder"
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"no {MANIFEST} (the save did not finish)"
    try:
        sizes = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        return f"unreadable {MANIFEST}: {err}"
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {size}"
    return None


def choose(ckpt_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint folder to resume from: None (fresh run), the newest that verifies ("auto"), or the one
    named (a tag under `ckpt_dir`, or a path to a tag folder).

    Raises CheckpointNotFound, one line listing the tags present, for a named checkpoint that is missing or damaged.
    """
    ckpt_dir = Path(ckpt_dir)
    if resume is None:
        return None
    if resume != "auto":
        folder = ckpt_dir / resume if os.sep not in resume else Path(resume)
        reason = problem(folder)
        if reason:
            listing = ", ".join(tags(folder.parent)) or "none"
            raise CheckpointNotFound(f"checkpoint {folder}: {reason}; tags present: {listing}")
        return folder
    present = tags(ckpt_dir)
    latest = latest_tag(ckpt_dir)
    if latest is not None and latest not in present:
        tqdm.write(f"resume: skipped {ckpt_dir / latest} (named by {ckpt_dir / 'latest'}): no such folder")
    for tag in reversed(present):
        reason = problem(ckpt_dir / tag)
        if reason is None:
            return ckpt_dir / tag
        tqdm.write(f"resume: skipped {ckpt_dir / tag}: {reason}")
    if present or latest is not None:
        tqdm.write(f"resume: no loadable checkpoint in {ckpt_dir}, starting from step 0")
    return None


def choose_on_all_ranks(ckpt_dir: Path, resume: str | None) -> Path | None:
    """`choose` on rank 0, broadcast so that every rank loads the same folder (an error there stops every rank)."""
    message: list = [None, None]  # [folder, error]
    if torch.distributed.get_rank() == 0:
        try:
            message[0] = choose(ckpt_dir, resume)
        except CheckpointNotFound as err:
            message[1] = str(err)
    if torch.distributed.get_world_size() > 1:
        torch.distributed.broadcast_object_list(message, src=0)
    if message[1] is not None:
        raise CheckpointNotFound(message[1])
    return message[0]


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(engine, ckpt_dir: Path, step: int, keep_last: int, frozen_saved: bool = True) -> None:
    """DeepSpeed checkpoint `step-{step}` (+ step and RNG states), its manifest, then prune to `keep_last`.

    `frozen_saved=False` (LoRA) leaves the frozen base weights out: the run rebuilds them from its base model."""
    tag = f"{_PREFIX}{step}"
    engine.save_checkpoint(
        str(ckpt_dir),
        tag=tag,
        client_state={"step": step, "rng": _rng_state()},
        exclude_frozen_parameters=not frozen_saved,
    )
    # save_checkpoint ends with a barrier: every rank's files are complete here
    if torch.distributed.get_rank() != 0:
        return
    folder = Path(ckpt_dir) / tag
    files = {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    tmp = folder / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"step": step, "files": files}, indent=1))
    os.replace(tmp, folder / MANIFEST)
    present = tags(ckpt_dir)
    for old in present[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(Path(ckpt_dir) / old)


def restore_cpu_adam(optimizer: torch.optim.Optimizer) -> None:
    """Bring DeepSpeedCPUAdam's C++ state to where an uninterrupted run has it (no-op for other optimizers).

    The op keeps beta1^t and beta2^t as floats, multiplied by beta once per step (`IncrementStep` in
    deepspeed/ops/csrc/includes/cpu_adam.h). A fresh op first called with step t > 1 computes them with
    `pow(beta, t)` instead, which differs in the last bits (beta2^t from t = 19 on for 0.999), so the bias
    corrections, and then the weights, drift. Replaying steps 1..t through the op on a one-element dummy
    tensor rebuilds the multiplied values exactly.
    """
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    while not isinstance(optimizer, DeepSpeedCPUAdam):
        optimizer = getattr(optimizer, "optimizer", None)
        if optimizer is None:
            return
    steps = {int(state["step"]) for state in optimizer.state.values() if "step" in state}
    if len(steps) > 1:
        raise RuntimeError(f"CPU Adam groups are at different steps {sorted(steps)}; expected one")
    group = optimizer.param_groups[0]
    beta1, beta2 = group["betas"]
    dummy = [torch.zeros(1) for _ in range(4)]  # param, grad, exp_avg, exp_avg_sq: (1,) each
    for step in range(1, max(steps, default=0) + 1):
        optimizer.ds_opt_adam.adam_update(
            optimizer.opt_id, step, 0.0, beta1, beta2, group["eps"], 0.0, group["bias_correction"], *dummy
        )


def load(engine, folder: Path, frozen_saved: bool = True) -> int:
    """Load the checkpoint in `folder` into `engine` (weights, fp32 master, optimizer, scheduler), restore CPU
    Adam's step state and the RNGs. -> the number of optimizer steps already done.

    `frozen_saved=False`: the checkpoint holds only the trainable weights (see `save`); the frozen ones are
    the base model's, already in `engine`."""
    _, client = engine.load_checkpoint(str(folder.parent), folder.name, load_module_strict=frozen_saved)
    if client is None:
        listing = ", ".join(tags(folder.parent))
        raise CheckpointNotFound(f"checkpoint {folder} could not be loaded; tags present: {listing}")
    restore_cpu_adam(engine.optimizer)
    _set_rng_state(client["rng"])
    return client["step"]


def open_metrics(path: Path, start: int):
    """`metrics.jsonl` open for appending, cut to the records of steps <= `start` so each step appears once.

    A last line cut short by a kill is dropped; any other unreadable line is an error naming it.
    """
    path = Path(path)
    if path.exists():
        lines = path.read_text().splitlines()
        kept = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                if number == len(lines):
                    break
                raise ValueError(f"{path}:{number}: not JSON ({err})") from err
            if record["step"] <= start:
                kept.append(line + "\n")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
    return path.open("a")
