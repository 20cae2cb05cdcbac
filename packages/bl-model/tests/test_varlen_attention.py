"""Packed causal attention: the reference against an explicit fp64 mask, the Triton kernel (interpreted on CPU)
against both, forward and dq / dk / dv, and the dispatcher."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from bl_model.ops import varlen_attention as va
from bl_model.ops.varlen_attention import (
    varlen_attention,
    varlen_attention_reference,
    varlen_attention_triton,
)

# The interpreter turns a loaded loop bound into an int through a 1-element array (numpy < 2.4 only warns).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Conversion of an array with ndim > 0 to a scalar:DeprecationWarning"
)

# error floor added to 2x the reference's error: about one unit roundoff of the dtype at 1.0
FLOOR = {torch.float32: 1e-6, torch.float16: 5e-4, torch.bfloat16: 4e-3}


def _cu(lens: list[int]) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)  # (S+1,)


def _inputs(lens: list[int], Hq: int, Hkv: int, D: int, seed: int = 0) -> list[torch.Tensor]:
    """q, k, v and an output gradient in fp64: (T, Hq, D), (T, Hkv, D), (T, Hkv, D), (T, Hq, D)."""
    g = torch.Generator().manual_seed(seed)
    T = sum(lens)
    return [torch.randn(T, H, D, generator=g, dtype=torch.float64) for H in (Hq, Hkv, Hkv, Hq)]


def _dense(q, k, v, cu_seqlens, scale=None):
    """Independent spec: one (T, T) block-diagonal causal mask, softmax over all T keys, in fp64."""
    T, Hq, D = q.shape
    lens = cu_seqlens.diff().long()  # (S,)
    seg = torch.repeat_interleave(torch.arange(lens.numel()), lens)  # (T,)
    pos = torch.arange(T)  # (T,)
    allowed = (seg[:, None] == seg[None, :]) & (pos[:, None] >= pos[None, :])  # (T, T)
    group = Hq // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (T, Hq, D)
    scores = torch.einsum("thd,shd->hts", q, k) * (scale or D**-0.5)  # (Hq, T, T)
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)  # (Hq, T, T)
    return torch.einsum("hts,shd->thd", probs, v)  # (T, Hq, D)


def _run(fn, tensors: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """fn(q, k, v) in `dtype`, backward with the given output gradient -> [o, dq, dk, dv] in fp64."""
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in tensors[:3])
    o = fn(q, k, v)  # (T, Hq, D)
    o.backward(tensors[3].to(dtype))
    return [t.detach().double() for t in (o, q.grad, k.grad, v.grad)]


@pytest.mark.parametrize(("Hq", "Hkv"), [(2, 2), (4, 2), (4, 1)])
def test_reference_matches_explicit_mask(Hq: int, Hkv: int) -> None:
    lens = [3, 0, 1, 9, 4]  # an empty segment too
    tensors, cu = _inputs(lens, Hq, Hkv, 8), _cu(lens)
    ref = _run(lambda q, k, v: varlen_attention_reference(q, k, v, cu, scale=0.3), tensors, torch.float64)
    dense = _run(lambda q, k, v: _dense(q, k, v, cu, scale=0.3), tensors, torch.float64)
    for got, want in zip(ref, dense, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_reference_rejects_bad_inputs() -> None:
    q, k, v, _ = _inputs([4, 4], 4, 2, 8)
    with pytest.raises(ValueError, match="rise from 0"):
        varlen_attention_reference(q, k, v, _cu([4, 3]))
    with pytest.raises(ValueError, match="multiple of Hkv"):
        varlen_attention_reference(q, k[:, :1].expand(-1, 3, -1), v[:, :1].expand(-1, 3, -1), _cu([4, 4]))
    with pytest.raises(TypeError, match="one floating dtype"):
        varlen_attention_reference(q, k.float(), v, _cu([4, 4]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("D", "Hq", "Hkv", "block"), [(16, 4, 2, 16), (64, 2, 1, 32)])
def test_triton_matches_reference(dtype: torch.dtype, D: int, Hq: int, Hkv: int, block: int) -> None:
    lens = [1, 5, 0, 1, 40]  # 40 > block: a segment spans several query and key blocks
    tensors, cu = _inputs(lens, Hq, Hkv, D, seed=D), _cu(lens)
    exact = _run(lambda q, k, v: _dense(q, k, v, cu), tensors, torch.float64)
    ref = _run(lambda q, k, v: varlen_attention_reference(q, k, v, cu), tensors, dtype)
    kernel = _run(
        lambda q, k, v: varlen_attention_triton(q, k, v, cu, max(lens), block_size=block), tensors, dtype
    )
    for name, got, base, want in zip(("o", "dq", "dk", "dv"), kernel, ref, exact, strict=True):
        kernel_err, ref_err = (got - want).abs().max().item(), (base - want).abs().max().item()
        assert kernel_err <= 2 * ref_err + FLOOR[dtype], (
            f"{name}: kernel {kernel_err:.2e} vs reference {ref_err:.2e}"
        )


def test_triton_default_blocks_and_scale() -> None:
    lens = [7, 20]
    tensors, cu = _inputs(lens, 2, 2, 16), _cu(lens)
    want = _run(lambda q, k, v: varlen_attention_reference(q, k, v, cu, scale=0.5), tensors, torch.float32)
    got = _run(
        lambda q, k, v: varlen_attention_triton(q, k, v, cu.long(), 20, scale=0.5), tensors, torch.float32
    )
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_dispatcher_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    lens = [3, 6]
    q, k, v, _ = (t.float() for t in _inputs(lens, 4, 2, 16))
    cu = _cu(lens)
    want = varlen_attention_reference(q, k, v, cu)
    torch.testing.assert_close(
        varlen_attention(q, k, v, cu, 6), want, rtol=0, atol=0
    )  # auto on CPU: reference
    torch.testing.assert_close(varlen_attention(q, k, v, cu, 6, backend="triton"), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="backend must be"):
        varlen_attention(q, k, v, cu, 6, backend="xformers")
    with pytest.raises(RuntimeError, match="flash-attn"):
        varlen_attention(q, k, v, cu, 6, backend="flash_attn")
    monkeypatch.setattr(va, "_INTERPRETED", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        varlen_attention(q, k, v, cu, 6, backend="triton")


def test_imports_without_triton_or_flash_attn(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("triton", "triton.language", "triton.runtime.interpreter", "flash_attn"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    spec = importlib.util.spec_from_file_location("_varlen_no_triton", va.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lens = [2, 3]
    q, k, v, _ = _inputs(lens, 2, 1, 8)
    torch.testing.assert_close(module.varlen_attention(q, k, v, _cu(lens), 3), _dense(q, k, v, _cu(lens)))
    with pytest.raises(RuntimeError, match="needs the `triton` package"):
        module.varlen_attention(q, k, v, _cu(lens), 3, backend="triton")


@pytest.mark.gpu
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_triton_and_flash_attn_on_gpu(D: int, dtype: torch.dtype) -> None:
    lens = [1, 700, 33, 1024, 250]
    tensors, cu = [t.cuda() for t in _inputs(lens, 8, 2, D)], _cu(lens).cuda()
    exact = _run(lambda q, k, v: varlen_attention_reference(q, k, v, cu), tensors, torch.float64)
    ref = _run(lambda q, k, v: varlen_attention_reference(q, k, v, cu), tensors, dtype)
    backends = ["triton"] + (["flash_attn"] if va.flash_attn_varlen_func is not None else [])
    for backend in backends:
        got = _run(
            lambda q, k, v, b=backend: varlen_attention(q, k, v, cu, max(lens), backend=b), tensors, dtype
        )
        for name, g, base, want in zip(("o", "dq", "dk", "dv"), got, ref, exact, strict=True):
            err, ref_err = (g - want).abs().max().item(), (base - want).abs().max().item()
            assert err <= 2 * ref_err + FLOOR[dtype], (
                f"{backend} {name}: {err:.2e} vs reference {ref_err:.2e}"
            )
