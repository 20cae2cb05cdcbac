"""Tiny-model training step on the CPU, and the compression reference against LLaMA-VID's eager code."""

import math

import torch
from _ancestors import ancestor_token_generation  # benchmarks/ is on sys.path (conftest.py)

import bl_model
from bl_model import BehaviorLlavaForCausalLM, MediaBatch
from bl_model.ops import compress_video_tokens

# medians of this run's compression benchmarks, so the ancestor row can report the ratio measured side by side
_MEDIANS: dict[str, float] = {}


def _median(benchmark) -> float | None:
    """The benchmark's median in seconds, or None when benchmarks are disabled (plain `pytest`)."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median


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
    if (median := _median(benchmark)) is not None:
        _MEDIANS["reference"] = median


def test_compress_ancestor_eager_t60(benchmark):
    """The same shapes through LLaMA-VID's eager `token_generation` maths; reports ancestor / reference time."""
    benchmark(ancestor_token_generation, *_compress_inputs())
    median = _median(benchmark)
    if median is not None and "reference" in _MEDIANS:
        benchmark.extra_info["ancestor_over_reference"] = round(median / _MEDIANS["reference"], 2)


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
