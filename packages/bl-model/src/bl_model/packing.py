"""Packed batches: several conversations in one row, attention kept inside each one.

A packed batch of S conversations of lengths L_1 … L_S (T = Σ L_s tokens):

    input_ids, labels, position_ids  (1, T)    position ids restart at 0 for each conversation
    cu_seqlens                       (S+1,)    int32 [0, L_1, L_1+L_2, …, T]
    max_seqlen                       int       max L_s

The LLM runs it with the "bl_packed" attention implementation (`enable_packed_attention`), which sends a
packed row to `ops.varlen_attention` and anything else (padded batches, generation) to transformers' SDPA:

    enable_packed_attention(model)
    batch = pack_sequences(ids_list, labels_list)
    model(input_ids=batch["input_ids"], labels=batch["labels"], position_ids=batch["position_ids"],
          **packed_attention_kwargs(batch["cu_seqlens"], batch["max_seqlen"]))

The kwargs carry transformers' own names for packed sequences (`cu_seq_lens_q`, `max_length_q`, as for
flash-attn); without them the segments are found from `position_ids` (one host sync per layer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .configuration import IGNORE_INDEX
from .ops.varlen_attention import varlen_attention

PACKED_ATTENTION = "bl_packed"


def pack_sequences(input_ids: list[torch.Tensor], labels: list[torch.Tensor]) -> dict:
    """S 1-D LongTensors of ids and their labels (L_s,) -> one packed row (shapes in the module docstring).

    The causal-LM loss scores logits[t] against labels[t + 1], so in a packed row the last token of a
    conversation would be scored against the first token of the next one. Each conversation's first label is
    set to -100: that label is only ever the target of the previous conversation's last token (a first token
    has no prediction in its own conversation), so the packed loss equals the unpacked one.
    """
    if not input_ids or len(input_ids) != len(labels):
        raise ValueError(
            f"need as many label tensors as id tensors (≥ 1), got {len(input_ids)} and {len(labels)}"
        )
    for ids, lab in zip(input_ids, labels, strict=True):
        if ids.dim() != 1 or ids.numel() == 0 or lab.shape != ids.shape:
            raise ValueError(
                f"each sequence must be 1-D, non-empty, with labels of its shape: {ids.shape}, {lab.shape}"
            )
    lengths = torch.tensor([ids.numel() for ids in input_ids])  # (S,)
    cu_seqlens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)  # (S+1,)
    starts = cu_seqlens[:-1].long()  # (S,)
    packed_labels = torch.cat(labels)  # (T,) a copy
    packed_labels[starts] = IGNORE_INDEX
    position_ids = torch.arange(int(cu_seqlens[-1])) - starts.repeat_interleave(lengths)  # (T,)
    return {
        "input_ids": torch.cat(input_ids)[None],  # (1, T)
        "labels": packed_labels[None],  # (1, T)
        "position_ids": position_ids[None],  # (1, T)
        "cu_seqlens": cu_seqlens,
        "max_seqlen": int(lengths.max()),
    }


def cu_seqlens_from_position_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """position_ids (1, T) or (T,) -> cu_seqlens (S+1,) int32; a segment starts at t = 0 and wherever the id is 0."""
    flat = position_ids.reshape(-1)  # (T,)
    is_start = flat == 0  # (T,)
    is_start[0] = True
    starts = is_start.nonzero().flatten()  # (S,)
    return torch.cat([starts, starts.new_tensor([flat.numel()])]).to(torch.int32)  # (S+1,)


def packed_attention_kwargs(cu_seqlens: torch.Tensor, max_seqlen: int) -> dict:
    """The model kwargs that carry a packed row's segments to the "bl_packed" attention of every layer."""
    return {
        "cu_seq_lens_q": cu_seqlens,
        "cu_seq_lens_k": cu_seqlens,
        "max_length_q": max_seqlen,
        "max_length_k": max_seqlen,
    }


def packed_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function "bl_packed". query (B, Hq, L, D), key / value (B, Hkv, L_kv, D)
    -> ((B, L, Hq, D), None), as `sdpa_attention_forward`.

    A packed row (B = 1, no mask, no cache, segments from `cu_seq_lens_q` or restarting `position_ids`) goes to
    `varlen_attention`; everything else to SDPA.
    """
    B, _, L, _ = query.shape
    if attention_mask is None and B == 1 and L > 1 and key.shape[2] == L:
        if cu_seq_lens_q is None and position_ids is not None and bool((position_ids[..., 1:] == 0).any()):
            cu_seq_lens_q = cu_seqlens_from_position_ids(position_ids)
        if cu_seq_lens_q is not None:
            if dropout:
                raise NotImplementedError("packed attention has no attention dropout")
            if max_length_q is None:
                max_length_q = cu_seq_lens_q.diff().max()
            q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (L, H, D)
            out = varlen_attention(q, k, v, cu_seq_lens_q.to(q.device), int(max_length_q), scale=scaling)
            return out[None], None  # (1, L, Hq, D)
    return sdpa_attention_forward(
        module,
        query,
        key,
        value,
        attention_mask,
        dropout=dropout,
        scaling=scaling,
        position_ids=position_ids,
        **kwargs,
    )


def packed_attention_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor | None:
    """Mask function for "bl_packed": none for a batch without padding or cache (the attention function is causal
    or varlen, so a packed row's (T, T) block-diagonal mask is never built); SDPA's mask otherwise."""
    if attention_mask is None and q_length == kv_length:
        return None
    return sdpa_mask(
        batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask=attention_mask, **kwargs
    )


AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
AttentionMaskInterface.register(PACKED_ATTENTION, packed_attention_mask)


def enable_packed_attention(model: PreTrainedModel) -> PreTrainedModel:
    """Switch the LLM (`model.language_model`, or `model` itself) to "bl_packed" attention; returns `model`."""
    getattr(model, "language_model", model).set_attn_implementation(PACKED_ATTENTION)
    return model
