"""Training data: BLIFT shards (random access by tar offsets) mixed with LLaMA-VID instruction data.

The sample order is a pure function of (seed, epoch), so a resumed run sees exactly the samples an
uninterrupted run would have, from the position saved in the checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bl_data.media import sample_frames
from bl_data.shards import ShardIndex
from bl_model import BehaviorLlavaProcessor, Media
from bl_model.llamavid_prompt import SampleBudgetError


class DataError(Exception):
    """Training data that cannot be mixed or read (the shards themselves raise `bl_data.shards.ShardError`)."""


def load_instruction_media(entry: dict[str, Any], root: Path, max_frames: int) -> list[Media]:
    """The media of a LLaMA-VID instruction sample: `image` (a file) or `video` (a video file or .npy frames)."""
    if "image" in entry:
        return [Media(np.asarray(Image.open(root / entry["image"]).convert("RGB")), is_video=False)]
    if "video" in entry:
        path = root / entry["video"]
        if path.suffix == ".npy":
            frames = np.load(path)
            if frames.ndim == 4 and frames.shape[1] == 3:
                frames = frames.transpose(0, 2, 3, 1)  # (T, 3, H, W) -> (T, H, W, 3)
        else:
            frames, _ = sample_frames(path, fps=1.0, max_frames=max_frames)
        return [Media(np.ascontiguousarray(frames), is_video=True)]
    return []


class MixedDataset(torch.utils.data.Dataset):
    """BLIFT and instruction samples interleaved at `blift_ratio`, tokenised by the processor.

    One epoch = every BLIFT sample once plus `round(n_blift * (1 - r) / r)` instruction samples (cycled),
    shuffled with (seed, epoch). `get(epoch, position)` gives the processed sample, or `None` and the reason
    when it is over the frame / length budget (such samples are skipped and counted, never truncated).
    """

    def __init__(
        self,
        processor: BehaviorLlavaProcessor,
        blift: ShardIndex | None,
        instructions: list[dict[str, Any]],
        media_root: Path,
        *,
        blift_ratio: float,
        with_behavior: bool,
        max_frames: int,
        seed: int,
    ):
        self.processor, self.blift, self.instructions = processor, blift, instructions
        self.media_root, self.with_behavior, self.max_frames, self.seed = (
            media_root,
            with_behavior,
            max_frames,
            seed,
        )
        n_blift = len(blift) if blift is not None and blift_ratio > 0 else 0
        if blift_ratio >= 1:
            n_inst = 0
        elif n_blift == 0:
            n_inst = len(instructions)
        else:
            n_inst = round(n_blift * (1 - blift_ratio) / blift_ratio)
        if n_inst and not instructions:
            raise DataError("the recipe mixes in instruction data but the instruction JSON is empty")
        self.n_blift, self.n_inst = n_blift, n_inst
        self._epoch, self._order = -1, np.empty((0, 2), np.int64)

    @property
    def epoch_size(self) -> int:
        return self.n_blift + self.n_inst

    def plan(self, epoch: int) -> np.ndarray:
        """(epoch_size, 2) rows of (source 0=BLIFT / 1=instruction, index), deterministic in (seed, epoch)."""
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            inst = (epoch * self.n_inst + np.arange(self.n_inst)) % max(len(self.instructions), 1)  # cycle
            rows = np.concatenate(
                [
                    np.stack([np.zeros(self.n_blift, np.int64), np.arange(self.n_blift)], 1),
                    np.stack([np.ones(self.n_inst, np.int64), inst], 1),
                ]
            )
            self._epoch, self._order = epoch, rows[rng.permutation(len(rows))]
        return self._order

    def __len__(self) -> int:
        return self.epoch_size

    def raw(self, epoch: int, position: int) -> tuple[dict[str, Any], list[Media]]:
        source, index = self.plan(epoch)[position]
        if source == 0:
            sample, frames = self.blift[int(index)]
            if not self.with_behavior:
                if "control_conversations" not in sample:
                    raise DataError(
                        f"BLIFT sample {sample.get('id')} has no control_conversations (Ad-LLaVA)"
                    )
                sample = {**sample, "conversations": sample["control_conversations"]}
            return sample, [Media.for_placeholder(sample["conversations"][0]["value"], frames)]
        entry = self.instructions[int(index)]
        return entry, load_instruction_media(entry, self.media_root, self.max_frames)

    def get(self, epoch: int, position: int) -> tuple[dict[str, torch.Tensor] | None, str | None]:
        sample, media = self.raw(epoch, position)
        try:
            return self.processor(sample, media), None
        except SampleBudgetError as err:
            return None, str(err)


def global_positions(
    micro_step: int, micro_batch_size: int, rank: int, world: int, epoch_size: int
) -> list[tuple[int, int]]:
    """(epoch, position) of the samples of this rank's micro-batch at micro-step `micro_step` (counted over the
    run): each micro-step takes `world x micro_batch_size` consecutive positions, rank-strided."""
    first = micro_step * micro_batch_size * world + rank * micro_batch_size
    return [divmod(first + i, epoch_size) for i in range(micro_batch_size)]


def steps_for(epochs: float, epoch_size: int, global_batch_size: int) -> int:
    """Optimizer steps for `epochs` passes over `epoch_size` samples, `global_batch_size` samples a step."""
    return max(1, math.ceil(epochs * epoch_size / global_batch_size))
