"""The training engine: DeepSpeed ZeRO (CPU optimizer offload), resumable, observable.

The same loop trains the tiny demo on one CPU process (gloo) and the 13B recipe on a GPU cluster
(`deepspeed` / `torchrun` launchers set RANK / WORLD_SIZE / MASTER_ADDR themselves).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import bl_model
from bl_data.progress import progress
from bl_data.shards import ShardIndex
from bl_model import BehaviorLlavaForCausalLM, BehaviorLlavaProcessor

from .batching import StepBatches
from .config import Recipe
from .data import MixedDataset, steps_for
from .deepspeed_config import deepspeed_config
from .evaluate import evaluate_behavior
from .schedule import warmup_cosine

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


@dataclass
class TrainSummary:
    steps: int
    losses: list[float] = field(default_factory=list)  # per micro-step, NaN for skipped ones
    skipped_samples: dict[str, int] = field(default_factory=dict)
    bad_steps: int = 0
    final_dir: Path | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> tuple[int, int]:
    """Join (or create, single-process) the process group. -> (rank, world size)."""
    import deepspeed

    if not torch.distributed.is_initialized():
        for key, value in (
            ("RANK", "0"),
            ("LOCAL_RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
        ):
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        deepspeed.init_distributed(
            dist_backend="nccl" if torch.cuda.is_available() else "gloo", verbose=False
        )
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def build_model(recipe: Recipe) -> BehaviorLlavaForCausalLM:
    m = recipe.model
    freeze = {k: getattr(m, k) for k in (
        "freeze_vision_tower", "freeze_qformer", "freeze_attention_projectors", "freeze_mm_projector", "freeze_language_model",
    )}  # fmt: skip
    if m.pretrained:
        model = BehaviorLlavaForCausalLM.from_pretrained(m.pretrained, **freeze)
    else:
        model = BehaviorLlavaForCausalLM(getattr(bl_model, m.builder)(**freeze))
    model.config.update(freeze)
    model.apply_freeze_policy()
    if m.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _latest_checkpoint(ckpt_dir: Path) -> str | None:
    latest = ckpt_dir / "latest"
    return latest.read_text().strip() if latest.exists() else None


def _prune(ckpt_dir: Path, keep: int) -> None:
    tags = sorted((p for p in ckpt_dir.glob("step-*") if p.is_dir()), key=lambda p: int(p.name[5:]))
    for old in tags[:-keep] if keep > 0 else []:
        shutil.rmtree(old)


class Trainer:
    """`Trainer(recipe).run()` trains, checkpoints every `save_every` steps and exports HF weights at the end."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe.validate()
        self.out = Path(recipe.train.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self._heldout: ShardIndex | None = None
        self._wandb = None

    def _data(self, processor: BehaviorLlavaProcessor) -> MixedDataset:
        d = self.recipe.data
        blift = ShardIndex(d.blift_shards) if d.blift_ratio > 0 else None
        instructions = []
        if d.blift_ratio < 1:
            path = Path(d.instruction_json)
            if not path.exists():
                raise FileNotFoundError(f"instruction data not found: {path}")
            instructions = json.loads(path.read_text())
        root = Path(d.media_root) if d.media_root else Path(d.instruction_json or ".").parent
        return MixedDataset(
            processor, blift, instructions, root, blift_ratio=d.blift_ratio, with_behavior=d.with_behavior,
            max_frames=d.max_frames, seed=self.recipe.train.seed,
        )  # fmt: skip

    def run(self, stop_after: int | None = None) -> TrainSummary:
        """Train to the recipe's end (or, for tests and preemption drills, stop after `stop_after` steps)."""
        import deepspeed
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        r, t = self.recipe, self.recipe.train
        rank, world = init_distributed()
        self.out.mkdir(parents=True, exist_ok=True)
        if rank == 0:
            r.save(self.out / "recipe.yaml")
        random.seed(t.seed)
        np.random.seed(t.seed)
        torch.manual_seed(t.seed)
        if t.tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True

        model = build_model(r)
        processor = BehaviorLlavaProcessor.from_pretrained(
            r.data.processor, model.config, max_length=r.data.max_length, max_frames=r.data.max_frames
        )
        dataset = self._data(processor)
        total = t.max_steps or steps_for(
            t.epochs, dataset.epoch_size, t.micro_batch_size * t.grad_accum, world
        )
        params = [p for p in model.parameters() if p.requires_grad]
        o = r.optim
        opt_cls = DeepSpeedCPUAdam if r.deepspeed.offload_optimizer == "cpu" else torch.optim.AdamW
        optimizer = opt_cls(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        scheduler = warmup_cosine(optimizer, total, o.warmup_ratio, o.schedule)
        engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(r, world)
        )

        start = 0
        tag = _latest_checkpoint(self.ckpt_dir) if t.resume == "auto" else t.resume
        if tag:
            _, client = engine.load_checkpoint(str(self.ckpt_dir), tag)
            if client is None:
                raise FileNotFoundError(f"checkpoint {self.ckpt_dir / tag} could not be loaded")
            start = client["step"]
            _set_rng_state(client["rng"])
        summary = TrainSummary(steps=start)
        metrics_file = (self.out / "metrics.jsonl").open("a") if rank == 0 else None
        tb = self._tensorboard() if rank == 0 else None
        if rank == 0 and t.wandb_project:
            try:
                import wandb
            except ImportError as err:
                raise ImportError(
                    "train.wandb_project is set but wandb is missing: pip install 'bl-train[wandb]'"
                ) from err
            self._wandb = wandb.init(project=t.wandb_project, name=r.name, config=r.to_dict(), resume="allow")
        micro_total = total * t.grad_accum
        loader = torch.utils.data.DataLoader(
            StepBatches(dataset, t.micro_batch_size, rank, world, start * t.grad_accum, micro_total, r.data.packing),
            batch_size=None, num_workers=r.data.num_workers, persistent_workers=False,
        )  # fmt: skip
        skipped: Counter[str] = Counter()
        bad_in_a_row = 0
        bar = progress(total=total, desc=r.name, initial=start, unit="step", disable=rank != 0)
        device = engine.device
        tic = time.perf_counter()
        tokens = 0
        try:
            for micro, item in enumerate(loader, start=start * t.grad_accum):
                skipped.update(reason.split(";")[0] for reason in item["skipped"])
                batch = item["batch"]
                step = micro // t.grad_accum
                if batch is None:
                    summary.losses.append(float("nan"))
                    continue
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                try:
                    loss = engine(**batch).loss
                except torch.OutOfMemoryError as err:
                    raise torch.OutOfMemoryError(
                        f"out of memory at step {step}: lower data.max_frames ({r.data.max_frames}) or "
                        f"data.max_length ({r.data.max_length}), or train.micro_batch_size"
                    ) from err
                if not torch.isfinite(loss):
                    bad_in_a_row += 1
                    summary.bad_steps += 1
                    summary.losses.append(float("nan"))
                    logger.warning(
                        "step %d: non-finite loss %s, step skipped (%d in a row)", step, loss.item(), bad_in_a_row
                    )
                    if bad_in_a_row >= t.max_bad_steps:
                        raise TrainingDiverged(f"{bad_in_a_row} non-finite losses in a row at step {step}")
                    continue
                bad_in_a_row = 0
                engine.backward(loss)
                engine.step()
                loss_value = loss.item()  # one device sync per step, reused below
                summary.losses.append(loss_value)
                tokens += int((batch["labels"] != bl_model.IGNORE_INDEX).sum())
                if (micro + 1) % t.grad_accum:
                    continue
                done = step + 1
                summary.steps = done
                lr = scheduler.get_last_lr()[0]
                rate = tokens / (time.perf_counter() - tic)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", tok_s=f"{rate:.0f}")
                bar.update(1)
                if metrics_file is not None and done % t.log_every == 0:
                    record = {
                        "step": done,
                        "loss": loss_value,
                        "lr": lr,
                        "tokens_per_s": rate,
                        "skipped": sum(skipped.values()),
                    }
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    self._log({f"train/{k}": record[k] for k in ("loss", "lr", "tokens_per_s")}, done, tb)
                if rank == 0 and t.eval_every and (done % t.eval_every == 0 or done == total):
                    self._evaluate(engine.module, processor, done, metrics_file, tb)
                if done % t.save_every == 0 or done == total:
                    self._save(engine, done)
                if stop_after is not None and done - start >= stop_after:
                    break
        finally:
            bar.close()
            if metrics_file is not None:
                metrics_file.close()
            if tb is not None:
                tb.close()
            if self._wandb is not None:
                self._wandb.finish()
        summary.skipped_samples = dict(skipped)
        if summary.steps == total and rank == 0:
            summary.final_dir = self._export(engine.module, processor)
        return summary

    def _log(self, scalars: dict[str, float | None], step: int, tb) -> None:
        for key, value in scalars.items():
            if value is not None:
                tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in scalars.items() if v is not None}, step=step)

    def _evaluate(self, model, processor: BehaviorLlavaProcessor, step: int, metrics_file, tb) -> None:
        """The paper's behaviour metrics on `data.heldout_shards`, logged beside the losses."""
        if not self.recipe.data.heldout_shards:
            return
        if self._heldout is None:
            self._heldout = ShardIndex(self.recipe.data.heldout_shards)
        t = self.recipe.train
        result = evaluate_behavior(model, processor, self._heldout, t.eval_samples, t.eval_max_new_tokens)
        logger.info("step %d behaviour eval: %s", step, json.dumps(result))
        metrics_file.write(json.dumps({"step": step, "eval": result}) + "\n")
        metrics_file.flush()
        self._log({f"eval/{k}": v for k, v in result.items()}, step, tb)

    def _save(self, engine, step: int) -> None:
        engine.save_checkpoint(
            str(self.ckpt_dir), tag=f"step-{step}", client_state={"step": step, "rng": _rng_state()}
        )
        if torch.distributed.get_rank() == 0:
            _prune(self.ckpt_dir, self.recipe.train.keep_last)

    def _export(self, model: BehaviorLlavaForCausalLM, processor: BehaviorLlavaProcessor) -> Path:
        final = self.out / "final"
        model.save_pretrained(final)
        processor.save_pretrained(final / "processor")
        return final

    def _tensorboard(self):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.out / "tensorboard"))
