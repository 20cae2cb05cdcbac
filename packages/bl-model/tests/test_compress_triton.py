"""compress_video_tokens, Triton backend (forward + backward) against float64; on CPU under TRITON_INTERPRET=1."""

import math

import pytest
import torch

import bl_model.ops as ops
from bl_model.ops import compress, compress_video_tokens, compress_video_tokens_reference

pytestmark = [
    pytest.mark.skipif(compress.triton is None, reason="triton is not installed"),
    # triton's CPU interpreter turns scalar kernel arguments into 1-element arrays and calls int() on them
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0 to a scalar:DeprecationWarning"),
]

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: conftest sets TRITON_INTERPRET=1
OUTPUTS = ("ctx", "content", "dx", "dq", "dw")


def random_problem(P, F, M, N, C, seed):
    """float64 inputs x (F, N, C), q (P, F, M, C), w (C, C), b (C,) and upstream grads (P, F, C), (F, C)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(F, N, C), (P, F, M, C), (C, C), (C,), (P, F, C), (F, C)]
    x, q, w, b, dctx, dcontent = (torch.randn(s, generator=g, dtype=torch.float64).to(DEVICE) for s in shapes)
    return x, q, w / math.sqrt(C), b, dctx, dcontent


def run(inputs, grads, dtype, backend, requires_grad=(True, True, True, True)):
    """Forward + backward in `dtype` -> {ctx, content, dx, dq, dw, db} (None for inputs without grad)."""
    leaves = [
        None if t is None else t.to(dtype).clone().requires_grad_(r)
        for t, r in zip(inputs, requires_grad, strict=True)
    ]
    ctx, content = compress_video_tokens(*leaves, backend=backend)
    pairs = [(out, g.to(dtype)) for out, g in zip((ctx, content), grads, strict=True) if out.requires_grad]
    torch.autograd.backward(*zip(*pairs, strict=True))
    return dict(
        zip((*OUTPUTS, "db"), (ctx, content, *(None if t is None else t.grad for t in leaves)), strict=True)
    )


def rms_error(a, ref):
    return (a.double() - ref).pow(2).mean().sqrt().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("P", "F", "M", "N", "C"), [(2, 3, 4, 7, 16), (2, 2, 4, 33, 40), (1, 2, 3, 255, 40), (2, 1, 5, 70, 130)]
)
def test_error_at_most_twice_the_reference_error(dtype, P, F, M, N, C):
    """Forward and every gradient: kernel error vs float64 <= 2 x the PyTorch reference's in the same dtype."""
    x, q, w, b, dctx, dcontent = random_problem(P, F, M, N, C, seed=N + C + P)
    exact = run((x, q, w, b), (dctx, dcontent), torch.float64, "reference")
    kernel = run((x, q, w, b), (dctx, dcontent), dtype, "triton")
    reference = run((x, q, w, b), (dctx, dcontent), dtype, "reference")
    for name in OUTPUTS:
        assert kernel[name].dtype == dtype and kernel[name].shape == exact[name].shape, name
        err, ref_err = rms_error(kernel[name], exact[name]), rms_error(reference[name], exact[name])
        assert err <= 2 * ref_err + 1e-6, f"{name}: kernel {err:.3g} vs reference {ref_err:.3g}"
    assert torch.equal(kernel["db"], torch.zeros_like(kernel["db"]))  # b_k cancels in the softmax


def test_poisoned_output_buffers_are_fully_overwritten(monkeypatch):
    """Every buffer the host code allocates (outputs and scratch) starts as NaN; the result must not change."""
    x, q, w, b, dctx, dcontent = random_problem(2, 2, 3, 33, 24, seed=3)
    clean = run((x, q, w, b), (dctx, dcontent), torch.float32, "triton")
    empty, poisoned_shapes = torch.empty, []

    def nan_empty(*args, **kwargs):
        t = empty(*args, **kwargs)
        poisoned_shapes.append(tuple(t.shape))
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", nan_empty)
    poisoned = run((x, q, w, b), (dctx, dcontent), torch.float32, "triton")
    assert {(2, 2, 24), (2, 24), (2, 2, 3, 24), (2, 2, 3, 33), (2, 2, 33), (2, 33, 24)} <= set(
        poisoned_shapes
    )
    for name in (*OUTPUTS, "db"):
        assert torch.equal(poisoned[name], clean[name]), name


@pytest.mark.parametrize(
    "requires_grad", [(True, False, False, False), (False, True, False, False), (False, False, True, True)]
)
def test_gradients_of_a_subset_of_inputs(requires_grad):
    """dx alone (no dq' pass), dq alone and dW_k alone (no dx pass) match the reference."""
    x, q, w, b, dctx, dcontent = random_problem(2, 2, 4, 9, 8, seed=4)
    kernel = run((x, q, w, b), (dctx, dcontent), torch.float32, "triton", requires_grad)
    reference = run((x, q, w, b), (dctx, dcontent), torch.float32, "reference", requires_grad)
    for name, needed in zip(("dx", "dq", "dw"), requires_grad, strict=False):
        assert (kernel[name] is None) == (not needed), name
        if needed:
            torch.testing.assert_close(kernel[name], reference[name], rtol=1e-4, atol=1e-5)


def test_non_contiguous_inputs():
    """x as a transposed view with a strided channel axis, q permuted, W_k transposed: no copies needed by the caller."""
    P, F, M, N, C = 2, 2, 3, 11, 12
    g = torch.Generator().manual_seed(5)
    x = (
        torch.randn(F, 2 * C, N, generator=g).to(DEVICE).transpose(1, 2)[:, :, ::2]
    )  # (F, N, C), strides (2CN, 1, 2N)
    q = torch.randn(F, P, M, C, generator=g).to(DEVICE).transpose(0, 1)  # (P, F, M, C)
    w = (torch.randn(C, C, generator=g) / math.sqrt(C)).to(DEVICE).T  # (C, C)
    assert not (x.is_contiguous() or q.is_contiguous() or w.is_contiguous())
    grads = [torch.randn(s, generator=g).to(DEVICE) for s in ((P, F, C), (F, C))]
    kernel = run((x, q, w, None), grads, torch.float32, "triton", (True, True, True, False))
    reference = run((x, q, w, None), grads, torch.float32, "reference", (True, True, True, False))
    for name in OUTPUTS:
        torch.testing.assert_close(kernel[name], reference[name], rtol=1e-4, atol=1e-5)


def test_prompts_share_frames():
    """P prompts over the same frames give each prompt's own single-prompt result; content is per frame only."""
    x, q, w, b, _, _ = random_problem(3, 2, 4, 16, 8, seed=6)
    ctx, content = compress_video_tokens(x.float(), q.float(), w.float(), b.float(), backend="triton")
    for p in range(3):
        single, single_content = compress_video_tokens(
            x.float(), q[p : p + 1].float(), w.float(), backend="triton"
        )
        torch.testing.assert_close(ctx[p : p + 1], single)
        torch.testing.assert_close(content, single_content)


@pytest.mark.parametrize(
    ("shapes", "dtypes", "error", "message"),
    [
        (((2, 5, 8), (1, 3, 4, 8), (8, 8)), (torch.float32,) * 3, ValueError, "q must be"),
        (((2, 5, 8), (1, 2, 4, 8), (8, 4)), (torch.float32,) * 3, ValueError, "key_weight must be"),
        (
            ((2, 5, 8), (1, 2, 4, 8), (8, 8)),
            (torch.float16, torch.float32, torch.float32),
            TypeError,
            "one floating",
        ),
        (((2, 5, 8), (1, 2, 4, 8), (8, 8)), (torch.float64,) * 3, TypeError, "float32, float16 and bfloat16"),
        (((1, 1024, 1), (1, 1, 32, 1), (1, 1)), (torch.float32,) * 3, ValueError, "too large"),
        # beyond the on-chip limit in 16-bit too (the backward spills) and past 64 queries
        (((1, 576, 1), (1, 1, 32, 1), (1, 1)), (torch.bfloat16,) * 3, ValueError, "too large"),
        (((1, 16, 1), (1, 1, 65, 1), (1, 1)), (torch.float16,) * 3, ValueError, "too large"),
    ],
)
def test_shape_and_dtype_errors(shapes, dtypes, error, message):
    x, q, w = (torch.randn(s, dtype=d, device=DEVICE) for s, d in zip(shapes, dtypes, strict=True))
    with pytest.raises(error, match=message):
        compress_video_tokens(x, q, w, backend="triton")


def test_auto_backend_on_cpu_is_the_reference(monkeypatch):
    def no_triton(*args):
        raise AssertionError("backend='auto' must not use triton on CPU tensors")

    monkeypatch.setattr(ops, "compress_video_tokens_triton", no_triton)
    x, q, w, b, _, _ = random_problem(2, 2, 4, 8, 8, seed=7)
    x, q, w, b = (t.cpu() for t in (x, q, w, b))
    for ours, ref in zip(
        compress_video_tokens(x, q, w, b), compress_video_tokens_reference(x, q, w, b), strict=True
    ):
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(compress, "_INTERPRETED", False)
    x, q, w, _, _, _ = random_problem(1, 2, 4, 8, 8, seed=8)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        compress_video_tokens(x.cpu().float(), q.cpu().float(), w.cpu().float(), backend="triton")


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("dtype", "N"), [(torch.float32, 256), (torch.float16, 255), (torch.bfloat16, 256), (torch.bfloat16, 512)]
)
def test_model_shapes_on_cuda(dtype, N):
    """LLaMA-VID shapes (M = 32 queries, C = 1408; odd N = 255: the masked tail) through the compiled kernels.

    `auto` picks triton on CUDA. benchmarks/gpu_check.py runs these as its correctness section.
    """
    x, q, w, b, dctx, dcontent = random_problem(2, 6, 32, N, 1408, seed=N)
    exact = run((x, q, w, b), (dctx, dcontent), torch.float64, "reference")
    kernel = run((x, q, w, b), (dctx, dcontent), dtype, "auto")
    reference = run((x, q, w, b), (dctx, dcontent), dtype, "reference")
    assert kernel["ctx"].grad_fn.name() == "CompressVideoTokensFunctionBackward"
    for name in OUTPUTS:
        err, ref_err = rms_error(kernel[name], exact[name]), rms_error(reference[name], exact[name])
        assert err <= 2 * ref_err + 1e-6, f"{name}: kernel {err:.3g} vs reference {ref_err:.3g}"


@pytest.mark.gpu
def test_auto_backend_falls_back_to_the_reference_beyond_the_on_chip_limit():
    """N = 600 / 576 tokens (M x N = 32 x 1024 > 32 x 512: the backward would spill) and float64 are beyond the
    kernel: `auto` uses the reference."""
    for N, dtype in ((600, torch.float32), (576, torch.bfloat16), (256, torch.float64)):
        x, q, w, b, _, _ = random_problem(1, 2, 32, N, 64, seed=N)
        assert not ops.triton_supports(32, N, dtype)
        ctx, _ = compress_video_tokens(*(t.to(dtype).requires_grad_() for t in (x, q, w, b)))
        assert ctx.grad_fn.name() != "CompressVideoTokensFunctionBackward"
