"""Batches of processed samples: token rows padded to (B, L), media and Q-Former prompts concatenated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from .configuration import IGNORE_INDEX

PaddingSide = Literal["right", "left"]


def pad_batch(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    pad_token_id: int,
    query_pad_token_id: int,
    padding_side: PaddingSide = "right",
) -> dict[str, torch.Tensor]:
    """Per-sample processor outputs -> one batch (B samples).

    Returns input_ids / attention_mask [B, L] (padded with `pad_token_id` / 0 on `padding_side`: "left" for batched
    generation), labels [B, L] (padded with -100; only if every sample has labels), pixel_values [sum S, 3, H, W],
    media_frame_counts / media_is_video [sum M], query_input_ids / query_attention_mask [sum Q, max Lq]
    (right-padded with `query_pad_token_id` / 0), query_media_index [sum Q] indexing the batch's media.
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    input_ids = [o["input_ids"] for o in outputs]
    batch = {
        "input_ids": pad_sequence(
            input_ids, batch_first=True, padding_value=pad_token_id, padding_side=padding_side
        ),  # (B, L)
        "attention_mask": pad_sequence(
            [torch.ones_like(ids) for ids in input_ids],
            batch_first=True,
            padding_value=0,
            padding_side=padding_side,
        ),  # (B, L)
    }
    if all("labels" in o for o in outputs):
        batch["labels"] = pad_sequence(
            [o["labels"] for o in outputs],
            batch_first=True,
            padding_value=IGNORE_INDEX,
            padding_side=padding_side,
        )  # (B, L)
    for key in ("pixel_values", "media_frame_counts", "media_is_video"):
        batch[key] = torch.cat([o[key] for o in outputs])  # (sum S, 3, H, W) / (sum M,)
    media_offsets = np.cumsum([0] + [o["media_frame_counts"].numel() for o in outputs])[:-1]  # (B,)
    batch["query_media_index"] = torch.cat(
        [o["query_media_index"] + int(offset) for o, offset in zip(outputs, media_offsets, strict=True)]
    )  # (sum Q,)
    query_len = max(o["query_input_ids"].shape[1] for o in outputs)
    batch["query_input_ids"] = torch.cat(
        [
            F.pad(
                o["query_input_ids"], (0, query_len - o["query_input_ids"].shape[1]), value=query_pad_token_id
            )
            for o in outputs
        ]
    )  # (sum Q, max Lq)
    batch["query_attention_mask"] = torch.cat(
        [
            F.pad(o["query_attention_mask"], (0, query_len - o["query_attention_mask"].shape[1]))
            for o in outputs
        ]
    )  # (sum Q, max Lq)
    return batch
