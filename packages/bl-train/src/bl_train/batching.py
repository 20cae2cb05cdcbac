"""Micro-batches for the engine: padded (processor.collate) or packed into one row with cu_seqlens."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bl_model import BehaviorLlavaProcessor, pack_sequences
from bl_model.packing import packed_attention_kwargs

from .data import MixedDataset, global_positions


def model_inputs(
    processor: BehaviorLlavaProcessor, samples: Sequence[dict], packing: bool
) -> dict[str, torch.Tensor] | None:
    """Processed samples -> model inputs. Packing concatenates the samples into one (1, ΣL) row, no padding."""
    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    batch = processor.collate(samples)
    if packing:
        packed = pack_sequences([s["input_ids"] for s in samples], [s["labels"] for s in samples])
        del batch["attention_mask"]
        batch |= {k: packed[k] for k in ("input_ids", "labels", "position_ids")}
        batch |= packed_attention_kwargs(packed["cu_seqlens"], packed["max_seqlen"])
    return batch


class StepBatches(torch.utils.data.Dataset):
    """Item i = this rank's collated micro-batch of micro-step `start + i` (`grad_accum` micro-steps make an
    optimizer step; processing runs in workers)."""

    def __init__(
        self,
        dataset: MixedDataset,
        micro_batch_size: int,
        rank: int,
        world: int,
        start: int,
        stop: int,
        packing: bool,
    ):
        self.dataset, self.micro_batch_size, self.rank, self.world = dataset, micro_batch_size, rank, world
        self.start, self.stop, self.packing = start, stop, packing

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> dict | None:
        positions = global_positions(
            self.start + i, self.micro_batch_size, self.rank, self.world, self.dataset.epoch_size
        )
        samples, reasons = zip(*(self.dataset.get(epoch, pos) for epoch, pos in positions), strict=True)
        return {
            "batch": model_inputs(self.dataset.processor, samples, self.packing),
            "skipped": [r for r in reasons if r],
        }
