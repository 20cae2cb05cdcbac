"""`batching.pad_batch`: right padding (training) and left padding (batched generation) on hand-made samples."""

from __future__ import annotations

import pytest
import torch

from bl_model.batching import pad_batch


def sample(ids: list[int], frames: int, queries: list[list[int]], labels: list[int] | None = None) -> dict:
    """A processor output with one video of `frames` frames, shown by every query."""
    out = {"input_ids": torch.tensor(ids)}
    if labels is not None:
        out["labels"] = torch.tensor(labels)
    width = max(map(len, queries))
    return out | {
        "pixel_values": torch.full((frames, 3, 2, 2), float(frames)),
        "media_frame_counts": torch.tensor([frames]),
        "media_is_video": torch.tensor([True]),
        "query_input_ids": torch.tensor([q + [0] * (width - len(q)) for q in queries]),
        "query_attention_mask": torch.tensor([[1] * len(q) + [0] * (width - len(q)) for q in queries]),
        "query_media_index": torch.zeros(len(queries), dtype=torch.long),
    }


def test_right_padding():
    short = sample([1, 5], 1, [[101, 7, 102]], labels=[-100, 5])
    long = sample([1, 6, 7], 2, [[101, 102], [101, 8, 9, 102]], labels=[-100, 6, 7])
    batch = pad_batch([short, long], pad_token_id=0, query_pad_token_id=3)
    assert batch["input_ids"].tolist() == [[1, 5, 0], [1, 6, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 5, -100], [-100, 6, 7]]
    assert batch["pixel_values"].shape == (3, 3, 2, 2) and batch["pixel_values"][:, 0, 0, 0].tolist() == [
        1,
        2,
        2,
    ]
    assert batch["media_frame_counts"].tolist() == [1, 2] and batch["media_is_video"].tolist() == [True, True]
    assert batch["query_media_index"].tolist() == [0, 1, 1]  # the second sample's queries show batch media 1
    # each sample's queries were padded with 0 to its own width; the batch pads them to 4 with the Q-Former pad
    assert batch["query_input_ids"].tolist() == [[101, 7, 102, 3], [101, 102, 0, 0], [101, 8, 9, 102]]
    assert batch["query_attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


def test_left_padding_for_generation():
    prompts = [sample([1, 5], 1, [[101, 102]]), sample([1, 6, 7], 1, [[101, 102]])]
    batch = pad_batch(prompts, pad_token_id=0, query_pad_token_id=0, padding_side="left")
    assert batch["input_ids"].tolist() == [[0, 1, 5], [1, 6, 7]]
    assert batch["attention_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert "labels" not in batch  # prompts have none
    labelled = [
        sample([1, 5], 1, [[101]], labels=[-100, 5]),
        sample([1, 6, 7], 1, [[101]], labels=[-100, 6, 7]),
    ]
    assert pad_batch(labelled, 0, 0, padding_side="left")["labels"].tolist() == [
        [-100, -100, 5],
        [-100, 6, 7],
    ]


def test_unknown_padding_side():
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left', got 'middle'"):
        pad_batch([sample([1], 1, [[101]])], 0, 0, padding_side="middle")
