"""compress_video_tokens (reference) against the literal LLaMA-VID formula in float64."""

import math

import pytest
import torch

from bl_model.ops import compress_video_tokens, compress_video_tokens_reference


def literal_formula(x, q, w, b):
    """The formula as written, in float64: project K for every token, copy x per prompt, mean over queries."""
    x, q, w, b = (t.double() for t in (x, q, w, b))
    P = q.shape[0]
    ctx = torch.empty(P, x.shape[0], x.shape[2], dtype=torch.float64)
    for p in range(P):
        keys = x @ w.T + b  # (F, N, C)
        attn = torch.softmax(q[p] @ keys.transpose(1, 2) / math.sqrt(x.shape[-1]), dim=-1)  # (F, M, N)
        ctx[p] = (attn @ x).mean(dim=1)  # (F, C)
    return ctx, x.mean(dim=1)


def random_inputs(P, F, M, N, C, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(F, N, C, generator=g, dtype=dtype)
    q = torch.randn(P, F, M, C, generator=g, dtype=dtype)
    w = torch.randn(C, C, generator=g, dtype=dtype) / math.sqrt(C)
    b = torch.randn(C, generator=g, dtype=dtype)
    return x, q, w, b


@pytest.mark.parametrize("P", [1, 3])
@pytest.mark.parametrize("N", [256, 255, 576])
@pytest.mark.parametrize("C", [64, 1408])
def test_reference_matches_literal_formula(P, N, C):
    x, q, w, b = random_inputs(P, F=3, M=8, N=N, C=C, seed=N + C + P)
    ctx, content = compress_video_tokens(x, q, w, b)
    ctx_ref, content_ref = literal_formula(x, q, w, b)
    assert ctx.shape == (P, 3, C) and content.shape == (3, C)
    torch.testing.assert_close(ctx.double(), ctx_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(content.double(), content_ref, rtol=1e-5, atol=1e-6)


def test_key_bias_cancels_in_the_softmax():
    x, q, w, b = random_inputs(2, 2, 4, 16, 8, dtype=torch.float64)
    with_bias, _ = compress_video_tokens_reference(x, q, w, b)
    without, _ = compress_video_tokens_reference(x, q, w, None)
    torch.testing.assert_close(with_bias, without)


def test_gradients_match_gradcheck():
    x, q, w, b = random_inputs(2, 3, 4, 7, 5, dtype=torch.float64, seed=1)
    for t in (x, q, w):
        t.requires_grad_(True)

    def fn(x, q, w):
        ctx, content = compress_video_tokens_reference(x, q, w, b)
        return ctx, content

    assert torch.autograd.gradcheck(fn, (x, q, w))


def test_gradients_match_literal_formula():
    x, q, w, b = random_inputs(3, 2, 4, 9, 6, dtype=torch.float64, seed=2)
    grads = []
    for impl in (compress_video_tokens_reference, literal_formula):
        leaves = [t.clone().requires_grad_(True) for t in (x, q, w)]
        ctx, content = impl(*leaves, b)
        (ctx.sin().sum() + content.cos().sum()).backward()
        grads.append([t.grad for t in leaves])
    for ours, ref in zip(*grads, strict=True):
        torch.testing.assert_close(ours, ref)


def test_prompts_share_frames_without_copying_x():
    """P prompts over the same frames give each prompt's own single-prompt result."""
    x, q, w, b = random_inputs(3, 4, 8, 32, 16)
    ctx, _ = compress_video_tokens_reference(x, q, w, b)
    for p in range(3):
        single, _ = compress_video_tokens_reference(x, q[p : p + 1], w, b)
        torch.testing.assert_close(ctx[p : p + 1], single)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (((2, 5, 8), (1, 3, 4, 8), (8, 8)), "q must be"),
        (((2, 5, 8), (1, 2, 4, 8), (8, 4)), "key_weight must be"),
        (((2, 5), (1, 2, 4, 8), (8, 8)), "x must be"),
    ],
)
def test_shape_errors(shapes, message):
    x, q, w = (torch.randn(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        compress_video_tokens(x, q, w)


def test_dtype_mismatch_and_unknown_backend():
    x, q, w, _ = random_inputs(1, 2, 4, 8, 8)
    with pytest.raises(TypeError, match="one floating dtype"):
        compress_video_tokens(x.half(), q, w)
    with pytest.raises(ValueError, match="backend"):
        compress_video_tokens(x, q, w, backend="cuda-magic")
