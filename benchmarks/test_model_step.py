"""Tiny-model training step on the CPU, and the compression reference against LLaMA-VID's eager code."""

import math

import torch

import bl_model
from bl_model import BehaviorLlavaForCausalLM, MediaBatch
from bl_model.ops import compress_video_tokens


def ancestor_token_generation(x, q, key_weight, key_bias):
    """LLaMA-VID `token_generation`: copy frames per prompt, project K for every token, then attend."""
    P, F, _, C = q.shape
    frames = x[None].expand(P, -1, -1, -1).flatten(0, 1)  # (P*F, N, C) copy of x per prompt
    keys = frames @ key_weight.T + key_bias  # (P*F, N, C): K for every token
    attn = (q.flatten(0, 1) @ keys.transpose(1, 2) / math.sqrt(C)).softmax(-1)  # (P*F, M, N)
    ctx = (attn @ frames).mean(1).view(P, F, C)  # (P, F, C)
    return ctx, x.mean(1)


def _compress_inputs():
    g = torch.Generator().manual_seed(0)
    T, P, N, C, M = 60, 2, 256, 1408, 32
    x = torch.randn(T, N, C, generator=g)
    q = torch.randn(P, T, M, C, generator=g)
    w = torch.randn(C, C, generator=g) / math.sqrt(C)
    b = torch.randn(C, generator=g)
    return x, q, w, b


def test_compress_reference_t60(benchmark):
    """T=60 frames, P=2, N=256, C=1408, M=32, fp32: our reference (compare with the ancestor row)."""
    x, q, w, b = _compress_inputs()
    ctx, _ = benchmark(compress_video_tokens, x, q, w, b)
    torch.testing.assert_close(ctx, ancestor_token_generation(x, q, w, b)[0], rtol=1e-3, atol=1e-4)


def test_compress_ancestor_eager_t60(benchmark):
    """The same shapes through LLaMA-VID's eager `token_generation` maths."""
    benchmark(ancestor_token_generation, *_compress_inputs())


def test_tiny_train_step(benchmark):
    """One forward + backward of `bl_model.tiny()` on a 2-frame video and a 64-token prompt."""
    torch.manual_seed(0)
    cfg = bl_model.tiny()
    model = BehaviorLlavaForCausalLM(cfg).train()
    ids = torch.randint(3, 32000, (1, 64))
    ids[0, 4 : 4 + cfg.media_tokens(2, True)] = cfg.media_token_id
    labels = ids.masked_fill(ids == cfg.media_token_id, -100)
    media = MediaBatch(
        torch.randn(2, 3, 224, 224),
        torch.tensor([2]),
        torch.tensor([True]),
        torch.randint(1000, 2000, (1, 16)),
        torch.ones(1, 16, dtype=torch.long),
        torch.tensor([0]),
    )

    def step():
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=labels, **vars(media)).loss
        loss.backward()
        return loss

    assert torch.isfinite(benchmark(step))
