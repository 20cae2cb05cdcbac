"""The training engine: DeepSpeed ZeRO (CPU optimizer offload), resumable, observable.

The same loop trains the tiny demo on one CPU process (gloo) and the 13B recipe on a GPU cluster
(`deepspeed` / `torchrun` launchers set RANK / WORLD_SIZE / MASTER_ADDR themselves).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
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
from bl_model import IGNORE_INDEX, BehaviorLlavaForCausalLM, BehaviorLlavaProcessor

from . import checkpoint, lora
from .batching import StepBatches
from .config import Recipe
from .data import MixedDataset, steps_for
from .deepspeed_config import deepspeed_config
from .evaluate import evaluate_behavior
from .metrics import JsonlLogger, MetricLoggers, TensorBoardLogger, WandbLogger
from .ranks import Faults, all_sum, check_world_size, label_tokens
from .schedule import warmup_cosine

_GATHERED = "zero3_gathered.bin"  # ZeRO-3's consolidated weights, read back by the export, then removed
logger = logging.getLogger(__name__)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


@dataclass
class TrainSummary:
    steps: int  # optimizer steps' worth of data consumed (skipped steps included)
    losses: list[float] = field(
        default_factory=list
    )  # global loss per step of this run, NaN for skipped ones
    skipped_samples: dict[str, int] = field(default_factory=dict)
    bad_steps: int = 0  # non-finite losses (on any rank)
    skipped_steps: int = 0  # steps no rank applied: a non-finite loss or an empty micro-batch on any rank
    final_dir: Path | None = None
    trainable_params: int = 0  # what the optimizer holds
    total_params: int = 0


@dataclass
class StepResult:
    """One optimizer step as every rank saw it (all fields are identical on all ranks)."""

    loss: float  # sum of token NLLs over all ranks and micro-steps / label tokens of the global batch; NaN if skipped
    tokens: int  # label tokens of the global batch
    skipped: str | None = None  # why no rank applied this step
    bad_micro_steps: int = 0  # micro-steps with a non-finite loss on some rank


def _grouped(items, size: int):
    """Consecutive groups of `size` items (the micro-batches of one optimizer step); a short tail is dropped."""
    group = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []


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


def build_model(recipe: Recipe) -> torch.nn.Module:
    """The model to train: `BehaviorLlavaForCausalLM` with the freeze policy applied (full), or wrapped by peft
    with LoRA adapters (lora; qlora on a 4-bit base)."""
    m, finetune = recipe.model, recipe.train.finetune
    freeze = {
        k: getattr(m, k)
        for k in (
            "freeze_vision_tower",
            "freeze_qformer",
            "freeze_attention_projectors",
            "freeze_mm_projector",
            "freeze_language_model",
        )
    }
    if finetune != "full":  # peft decides what trains; a 4-bit weight must not be asked to require grad
        freeze = dict.fromkeys(freeze, True)
    quantize = {}
    if finetune == "qlora":
        problem = lora.qlora_problem()
        if problem:
            raise lora.LoraSetupError(f"--train.finetune: {problem}")
        dtype = _DTYPES[recipe.train.precision]
        quantize = {  # quantized on this rank's GPU as the weights load
            "quantization_config": lora.quantization_config(dtype),
            "dtype": dtype,
            "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))},
        }
    if m.pretrained:
        model = BehaviorLlavaForCausalLM.from_pretrained(m.pretrained, **freeze, **quantize)
    else:
        model = BehaviorLlavaForCausalLM(getattr(bl_model, m.builder)(**freeze))
    model.config.update(freeze)
    model.apply_freeze_policy()
    if m.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if finetune != "full":
        model = lora.apply_lora(model, recipe.lora, m.pretrained)
    return model


class Trainer:
    """`Trainer(recipe).run()` trains, checkpoints every `save_every` steps and exports HF weights at the end.

    torchtune's shape: `run()` is `setup()` (process group, engine, data, state, metric sinks), `train()` (the
    loop) and `close()` (the sinks, then the export of a finished run).
    """

    def __init__(self, recipe: Recipe):
        self.recipe = recipe.validate()
        self.out = Path(recipe.train.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self._heldout: ShardIndex | None = None
        self.engine = None  # the DeepSpeed engine of the last `setup` (its module is what `final/` exports)
        self.metrics = MetricLoggers()  # rank 0's sinks once `setup` has run

    def run(self, stop_after: int | None = None) -> TrainSummary:
        """Train to the recipe's end (or, for tests and preemption drills, stop after `stop_after` steps)."""
        self.setup()
        try:
            self.train(stop_after)
        except BaseException:
            self.close(export=False)
            raise
        return self.close()

    def setup(self) -> None:
        """Join the process group, build the engine (restored from a checkpoint when resuming), the data loader
        from the resumed position and, on rank 0, the metric sinks."""
        r, t = self.recipe, self.recipe.train
        self.rank, self.world = init_distributed()
        resume_from = checkpoint.choose_on_all_ranks(self.ckpt_dir, t.resume)  # fails fast on a missing tag
        if resume_from:  # and on another world size, before the model and the engine are built
            check_world_size(resume_from, self.world)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            r.save(self.out / "recipe.yaml")
        random.seed(t.seed)
        np.random.seed(t.seed)
        torch.manual_seed(t.seed)
        if t.tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True

        model = build_model(r)
        trainable, total_params = lora.parameter_counts(model)
        if self.rank == 0:
            logger.info(
                "%s fine-tune: trainable parameters %d of %d (%.3f%%)",
                t.finetune,
                trainable,
                total_params,
                100 * trainable / total_params,
            )
        preprocess = {"preprocess": r.data.preprocess} if r.data.preprocess else {}
        self.processor = BehaviorLlavaProcessor.from_pretrained(
            r.data.processor, max_length=r.data.max_length, max_frames=r.data.max_frames, **preprocess
        )
        self.processor.check_config(model.config)
        dataset = self._data(self.processor)
        self.total = t.max_steps or steps_for(t.epochs, dataset.epoch_size, t.global_batch_size(self.world))
        self.engine, self.scheduler = self._engine(model)
        self.start = 0
        if resume_from:
            self.start = checkpoint.load(self.engine, resume_from, frozen_saved=t.finetune == "full")
        self.summary = TrainSummary(steps=self.start, trainable_params=trainable, total_params=total_params)
        self.metrics = self._metric_sinks() if self.rank == 0 else MetricLoggers()
        self.loader = torch.utils.data.DataLoader(
            StepBatches(
                dataset,
                t.micro_batch_size,
                self.rank,
                self.world,
                self.start * t.grad_accum,
                self.total * t.grad_accum,
                r.data.packing,
            ),
            batch_size=None,
            num_workers=r.data.num_workers,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(t.seed),  # worker seeds; the global RNG stays as restored
        )

    def _engine(self, model: torch.nn.Module):
        """The DeepSpeed engine over `model` with its optimizer (CPU Adam when offloaded) and LR schedule."""
        import deepspeed
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        r, o = self.recipe, self.recipe.optim
        params = [p for p in model.parameters() if p.requires_grad]
        opt_cls = DeepSpeedCPUAdam if r.deepspeed.offload_optimizer == "cpu" else torch.optim.AdamW
        optimizer = opt_cls(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        scheduler = warmup_cosine(optimizer, self.total, o.warmup_ratio, o.schedule)
        engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(r, self.world)
        )
        return engine, scheduler

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
            processor,
            blift,
            instructions,
            root,
            blift_ratio=d.blift_ratio,
            with_behavior=d.with_behavior,
            max_frames=d.max_frames,
            seed=self.recipe.train.seed,
        )

    def _metric_sinks(self) -> MetricLoggers:
        """metrics.jsonl and TensorBoard under `output_dir`, and W&B when `train.wandb_project` is set."""
        t, sinks = self.recipe.train, MetricLoggers()
        try:
            sinks.sinks.append(JsonlLogger(self.out / "metrics.jsonl", self.start))
            sinks.sinks.append(TensorBoardLogger(self.out / "tensorboard", self.start))
            if t.wandb_project:
                sinks.sinks.append(WandbLogger(t.wandb_project, self.recipe.name, self.recipe.to_dict()))
        except BaseException:
            sinks.close()  # the ones already open
            raise
        return sinks

    def train(self, stop_after: int | None = None) -> TrainSummary:
        """The loop from the resumed step: one optimizer step per `grad_accum` micro-batches, a metrics record
        every `log_every` steps, evaluations and checkpoints on their schedules."""
        t, summary = self.recipe.train, self.summary
        faults, skipped = Faults(self.rank), Counter()
        bad_in_a_row, tokens, tic = 0, 0, time.perf_counter()
        with progress(
            total=self.total, desc=self.recipe.name, initial=self.start, unit="step", disable=self.rank != 0
        ) as bar:
            for step, items in enumerate(_grouped(self.loader, t.grad_accum), start=self.start):
                for item in items:
                    skipped.update(reason.split(";")[0] for reason in item["skipped"])
                empty = faults.hits("empty", step + 1, len(items))
                batches = [None if drop else item["batch"] for item, drop in zip(items, empty, strict=True)]
                result = self._step(
                    self.engine, batches, step + 1, faults.hits("nonfinite", step + 1, len(items))
                )
                done = step + 1
                bad_in_a_row = bad_in_a_row + 1 if result.bad_micro_steps else 0
                self._account(result, done, bad_in_a_row)
                tokens += result.tokens
                lr = self.scheduler.get_last_lr()[0]
                rate = tokens / (time.perf_counter() - tic)
                bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{rate:.0f}")
                bar.update(1)
                if done % t.log_every == 0:
                    self.metrics.log(
                        done,
                        {
                            "loss": None if result.skipped else result.loss,
                            "lr": lr,
                            "tokens_per_s": rate,
                            "elapsed_s": time.perf_counter() - tic,
                            "skipped": sum(skipped.values()),
                            "skipped_steps": summary.skipped_steps,
                        },
                    )
                if t.eval_every and (done % t.eval_every == 0 or done == self.total):
                    self._evaluate(done)
                if done % t.save_every == 0 or done == self.total:
                    self._save(self.engine, done)
                if stop_after is not None and done - self.start >= stop_after:
                    break
        summary.skipped_samples = dict(skipped)
        return summary

    def _account(self, result: StepResult, done: int, bad_in_a_row: int) -> None:
        """Add step `done` to the summary; stop the run after `train.max_bad_steps` non-finite steps in a row."""
        summary = self.summary
        summary.steps = done
        summary.losses.append(result.loss)
        summary.bad_steps += result.bad_micro_steps
        if result.skipped:
            summary.skipped_steps += 1
            logger.warning("rank %d: step %d skipped on every rank: %s", self.rank, done, result.skipped)
        if bad_in_a_row >= self.recipe.train.max_bad_steps:
            raise TrainingDiverged(f"{bad_in_a_row} non-finite losses in a row at step {done}")

    def close(self, export: bool = True) -> TrainSummary:
        """Close the metric sinks; then, when `export` and the run reached its last step, write `final/` (every
        rank calls it)."""
        self.metrics.close()
        if export and self.summary.steps == self.total:
            self.summary.final_dir = self._export(self.engine, self.processor)
        return self.summary

    def _step(
        self, engine, batches: list[dict | None], step: int, poison: list[bool] | None = None
    ) -> StepResult:
        """One optimizer step from this rank's `grad_accum` micro-batches, decided identically on every rank.

        Loss: Σ token NLL / N, N = label tokens of the global batch (all ranks, all micro-steps, one all-reduce
        before the first forward). Each rank backpropagates Σ_rank,micro NLL × world × accum / N because
        DeepSpeed divides by `gradient_accumulation_steps` and averages gradients over ranks, so the applied
        gradient is that of the global token mean, whatever the split into ranks and micro-steps.
        Skips: an empty micro-batch on any rank (known from the same all-reduce) or a non-finite loss on any rank
        (the summed loss of each micro-step is all-reduced before its backward) at the first micro-step skips the
        step on every rank; later in the step, every rank backpropagates `_zero_gradient_loss` for that micro-step
        instead, so the step applies the other micro-steps' gradients (still divided by N).
        `poison[m]` (a test hook, see `ranks.Faults`) makes this rank's loss of micro-step m NaN.
        """
        world, accum = torch.distributed.get_world_size(), len(batches)
        stats = all_sum(
            torch.tensor([label_tokens(b) for b in batches] + [b is None for b in batches])
        )  # (2A,)
        n_tokens, empty = int(stats[:accum].sum()), stats[accum:] > 0
        per_backward = max(n_tokens, 1) / (world * accum)  # N / (world x accum): see the docstring
        loss_sum, bad = 0.0, 0
        for micro, batch in enumerate(batches):
            value, loss = float("nan"), None
            if not empty[micro]:
                batch = _on_device(batch, engine.device)
                try:
                    loss = engine(**batch, num_items_in_batch=per_backward).loss
                except torch.OutOfMemoryError as err:
                    r = self.recipe
                    raise torch.OutOfMemoryError(
                        f"out of memory at step {step}: lower data.max_frames ({r.data.max_frames}) or "
                        f"data.max_length ({r.data.max_length}), or train.micro_batch_size"
                    ) from err
                if poison and poison[micro]:
                    loss = loss * float("nan")
                value = float(all_sum(loss.reshape(1))[0])  # one sync per micro-step: decision + logged loss
                bad += not math.isfinite(value)
            if math.isfinite(value):
                engine.backward(loss)
                loss_sum += value
            elif micro == 0:
                reason = "empty micro-batch (all samples over budget)" if empty[0] else "non-finite loss"
                return StepResult(float("nan"), n_tokens, reason, bad)
            else:
                loss = None  # free the bad micro-step's graph before the stand-in forward
                engine.backward(_zero_gradient_loss(engine, batches[0], per_backward))
            engine.step()
        return StepResult(loss_sum / (world * accum), n_tokens, None, bad)

    def _evaluate(self, step: int) -> None:
        """The paper's behaviour metrics on `data.heldout_shards`, logged beside the losses.

        Every rank evaluates its share of the held-out samples and the sums are gathered (`evaluate_behavior`):
        at 8 GPUs x 13B a rank-0-only eval would leave 7 GPUs idle inside the next collective for the whole
        generation (32 samples x 512 new tokens: minutes, close to NCCL's timeout), and 1/8 of the samples per
        rank finishes 8x sooner with no collective but the final gather. Rank 0 writes the result."""
        if not self.recipe.data.heldout_shards:
            return
        if self._heldout is None:
            self._heldout = ShardIndex(self.recipe.data.heldout_shards)
        t = self.recipe.train
        result = evaluate_behavior(
            self.engine.module, self.processor, self._heldout, t.eval_samples, t.eval_max_new_tokens
        )
        if self.rank == 0:
            logger.info("step %d behaviour eval: %s", step, json.dumps(result))
        self.metrics.log(step, {"eval": result})

    def _save(self, engine, step: int) -> None:
        t = self.recipe.train
        checkpoint.save(engine, self.ckpt_dir, step, t.keep_last, frozen_saved=t.finetune == "full")

    def _export(self, engine, processor: BehaviorLlavaProcessor) -> Path:
        """HF weights and the processor in `final/` (every rank calls: under ZeRO-3 the partitions are gathered
        first). LoRA: the adapter in `final-adapter/`, then `final/` = the base with the adapter merged in."""
        final = self.out / "final"
        model = engine.module
        is_main = torch.distributed.get_rank() == 0
        if self.recipe.train.finetune != "full":
            adapter = self.out / "final-adapter"
            lora.save_adapter(model, adapter, is_main)
            if is_main:
                processor.save_pretrained(adapter)  # so apps/eval and apps/predict take the folder as it is
                lora.merge_into_base(adapter, final)
                processor.save_pretrained(final)
            torch.distributed.barrier()
            return final
        state = None
        if engine.zero_optimization_partition_weights():
            # ZeRO-3: each rank holds a slice of every weight; gather them layer by layer onto rank 0
            engine.save_16bit_model(str(final), _GATHERED)
            if is_main:
                state = torch.load(final / _GATHERED, map_location="cpu", weights_only=True)
                (final / _GATHERED).unlink()
        if is_main:
            model.save_pretrained(final, state_dict=state)
            processor.save_pretrained(final)
        torch.distributed.barrier()
        return final


def _on_device(batch: dict, device: torch.device) -> dict:
    """A copy of `batch` with its tensors on `device` (other values as they are)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _zero_gradient_loss(engine, batch: dict, per_backward: float) -> torch.Tensor:
    """A loss of 0 whose backward gives every trainable parameter an exact zero gradient: the forward of `batch`
    (a micro-batch whose loss was finite on every rank) with every label ignored.

    A stand-in for a dropped micro-step: DeepSpeed moves accumulated gradients in hooks that only a backward
    through the model fires (a bare zero tensor would lose the step's earlier micro-steps under ZeRO-2 offload),
    and under ZeRO-3 every rank must run the same forward."""
    batch = _on_device(batch, engine.device)
    batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)  # (B, L): nothing scored
    return engine(**batch, num_items_in_batch=per_backward).loss
