"""Packing helpers and the "bl_packed" attention: a packed row gives the logits, per-token losses, mean loss and
LLM gradients of the same conversations run one by one and as a padded batch."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

import bl_model
from bl_model import packing
from bl_model.packing import (
    cu_seqlens_from_position_ids,
    enable_packed_attention,
    pack_sequences,
    packed_attention_kwargs,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:Conversion of an array with ndim > 0 to a scalar:DeprecationWarning"
)

LENGTHS = [7, 12, 5]


def _conversations() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Three conversations (L_s,): ids and labels with -100 prompts (none in the last: its first label is an id,
    which a packed row must not score) and one -100 token inside an answer."""
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(3, 32000, (n,), generator=g) for n in LENGTHS]
    labels = [x.clone() for x in ids]
    for y, n_prompt in zip(labels, [3, 5, 0], strict=True):
        y[:n_prompt] = -100
    labels[1][8] = -100
    return ids, labels


def _model() -> bl_model.BehaviorLlavaForCausalLM:
    torch.manual_seed(0)
    model = bl_model.BehaviorLlavaForCausalLM(bl_model.tiny()).eval()  # fp32, GQA (4 query / 2 kv heads)
    torch.nn.init.normal_(
        model.get_output_embeddings().weight, std=1.0
    )  # peaked logits: per-token losses differ
    return model


def _padded(ids: list[torch.Tensor], labels: list[torch.Tensor]) -> dict:
    """Right-padded batch: input_ids / attention_mask / labels (B, L_max)."""
    B, L = len(ids), max(x.numel() for x in ids)
    batch = {
        "input_ids": torch.zeros(B, L, dtype=torch.long),
        "attention_mask": torch.zeros(B, L, dtype=torch.long),
        "labels": torch.full((B, L), -100),
    }
    for i, (x, y) in enumerate(zip(ids, labels, strict=True)):
        batch["input_ids"][i, : x.numel()] = x
        batch["attention_mask"][i, : x.numel()] = 1
        batch["labels"][i, : x.numel()] = y
    return batch


def _run(model, **inputs) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """-> loss, logits (B, L, V), LLM parameter gradients of the loss."""
    model.zero_grad()
    out = model(**inputs)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.language_model.named_parameters()}
    return out.loss.detach(), out.logits.detach(), grads


def _token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (L, V), labels (L,) of one conversation -> next-token CE (L-1,), 0 where the target is -100."""
    return F.cross_entropy(logits[:-1], labels[1:], reduction="none")  # (L-1,)


def _packed_inputs(batch: dict, with_kwargs: bool = True) -> dict:
    inputs = {k: batch[k] for k in ("input_ids", "labels", "position_ids")}
    if with_kwargs:
        inputs |= packed_attention_kwargs(batch["cu_seqlens"], batch["max_seqlen"])
    return inputs


def _assert_grads_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        atol = (
            1e-5 * want[name].abs().max().item()
        )  # fp32 summation-order noise, relative to the gradient's scale
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=atol, msg=name)


def test_pack_sequences_layout() -> None:
    ids = [torch.tensor([10, 11, 12]), torch.tensor([20]), torch.tensor([30, 31])]
    labels = [torch.tensor([-100, 11, 12]), torch.tensor([20]), torch.tensor([30, 31])]
    batch = pack_sequences(ids, labels)
    assert torch.equal(batch["input_ids"], torch.tensor([[10, 11, 12, 20, 30, 31]]))
    # each conversation's first label is never its own target; it would be the previous one's last target
    assert torch.equal(batch["labels"], torch.tensor([[-100, 11, 12, -100, -100, 31]]))
    assert torch.equal(batch["position_ids"], torch.tensor([[0, 1, 2, 0, 0, 1]]))
    assert batch["cu_seqlens"].dtype == torch.int32
    assert batch["cu_seqlens"].tolist() == [0, 3, 4, 6]
    assert batch["max_seqlen"] == 3
    assert labels[1].tolist() == [20]  # inputs untouched
    with pytest.raises(ValueError, match="as many label tensors"):
        pack_sequences(ids, labels[:2])
    with pytest.raises(ValueError, match="1-D, non-empty"):
        pack_sequences([torch.tensor([1, 2])], [torch.tensor([1])])


def test_cu_seqlens_from_position_ids() -> None:
    batch = pack_sequences(*_conversations())
    assert torch.equal(cu_seqlens_from_position_ids(batch["position_ids"]), batch["cu_seqlens"])
    got = cu_seqlens_from_position_ids(torch.tensor([3, 4, 0, 1, 2, 0]))  # (T,); a first segment not at 0
    assert got.dtype == torch.int32
    assert got.tolist() == [0, 2, 5, 6]


def test_packed_matches_unpacked() -> None:
    ids, labels = _conversations()
    model = _model()
    padded = _padded(ids, labels)
    loss_pad, logits_pad, grads_pad = _run(model, **padded)  # stock SDPA
    alone = [model(input_ids=x[None]).logits.detach()[0] for x in ids]  # (L_s, V) one by one

    enable_packed_attention(model)
    assert model.language_model.config._attn_implementation == "bl_packed"
    # a padded batch under "bl_packed" is SDPA with its padding mask (the mask function is registered too)
    logits_pad2 = model(**padded).logits.detach()
    torch.testing.assert_close(logits_pad2, logits_pad, rtol=0, atol=0)

    batch = pack_sequences(ids, labels)
    loss, logits, grads = _run(model, **_packed_inputs(batch))
    cu = batch["cu_seqlens"].tolist()
    for i, (y, single) in enumerate(zip(labels, alone, strict=True)):
        seg = logits[0, cu[i] : cu[i + 1]]  # (L_s, V)
        torch.testing.assert_close(seg, logits_pad[i, : y.numel()], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(seg, single, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(_token_ce(seg, y), _token_ce(single, y), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, loss_pad, rtol=1e-6, atol=1e-6)
    _assert_grads_close(grads, grads_pad)

    # the labels of a plain concatenation score each conversation's last token against the next one's first
    naive = model(**(_packed_inputs(batch) | {"labels": torch.cat(labels)[None]})).loss
    assert not torch.allclose(naive, loss_pad, rtol=1e-4)


def test_segments_reach_the_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def spy(q, k, v, cu_seqlens, max_seqlen, **kwargs):
        calls.append((q.shape, cu_seqlens.tolist(), max_seqlen))
        return varlen_attention(q, k, v, cu_seqlens, max_seqlen, **kwargs)

    varlen_attention = packing.varlen_attention
    monkeypatch.setattr(packing, "varlen_attention", spy)
    model = enable_packed_attention(_model())
    batch = pack_sequences(*_conversations())
    T, layers = sum(LENGTHS), model.config.text_config.num_hidden_layers
    with torch.no_grad():
        with_kwargs = model(
            **_packed_inputs(batch)
        ).logits  # cu_seq_lens_q / max_length_q through forward(**kwargs)
        from_positions = model(
            **_packed_inputs(batch, with_kwargs=False)
        ).logits  # segments from position_ids
    assert calls == [((T, 4, 16), batch["cu_seqlens"].tolist(), max(LENGTHS))] * (2 * layers)
    torch.testing.assert_close(from_positions, with_kwargs, rtol=0, atol=0)


def test_packed_triton_backend_in_model(monkeypatch: pytest.MonkeyPatch) -> None:
    model = enable_packed_attention(_model())
    inputs = _packed_inputs(pack_sequences(*_conversations()))
    loss_ref, logits_ref, grads_ref = _run(model, **inputs)
    monkeypatch.setattr(
        packing, "varlen_attention", functools.partial(packing.varlen_attention, backend="triton")
    )
    loss, logits, grads = _run(model, **inputs)
    torch.testing.assert_close(logits, logits_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-6, atol=1e-6)
    _assert_grads_close(grads, grads_ref)


def test_generation_under_packed_attention_matches_sdpa() -> None:
    model = _model()
    input_ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])  # left-padded prompts (B, L)
    attention_mask = (torch.arange(5) >= torch.tensor([[2], [0]])).long()  # (B, L)
    want = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=4)
    got = enable_packed_attention(model).generate(input_ids, attention_mask=attention_mask, max_new_tokens=4)
    assert torch.equal(got, want)
