"""EVA ViT-G against explicit maths and LAVIS' key layout; full-size configs counted on the meta device."""

import math

import torch

import bl_model
from bl_model import BehaviorLlavaForCausalLM, EvaVisionConfig
from bl_model.eva_vit import EvaVisionTransformer


def explicit_block(sd: dict, i: int, x: torch.Tensor, heads: int, eps: float) -> torch.Tensor:
    """One LAVIS EVA block from its state dict, with every product written out."""
    p = lambda name: sd[f"blocks.{i}.{name}"]  # noqa: E731
    B, L, C = x.shape
    d = C // heads
    h = torch.nn.functional.layer_norm(x, (C,), p("norm1.weight"), p("norm1.bias"), eps)
    q = h @ p("attn.qkv.weight")[:C].T + p("attn.q_bias")
    k = h @ p("attn.qkv.weight")[C : 2 * C].T  # EVA's k has no bias
    v = h @ p("attn.qkv.weight")[2 * C :].T + p("attn.v_bias")
    split = lambda t: t.view(B, L, heads, d).transpose(1, 2)  # noqa: E731
    attn = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(d), dim=-1)
    x = x + (attn @ split(v)).transpose(1, 2).reshape(B, L, C) @ p("attn.proj.weight").T + p("attn.proj.bias")
    h = torch.nn.functional.layer_norm(x, (C,), p("norm2.weight"), p("norm2.bias"), eps)
    h = torch.nn.functional.gelu(h @ p("mlp.fc1.weight").T + p("mlp.fc1.bias"))
    return x + h @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")


def test_eva_matches_explicit_maths_and_selects_layers():
    torch.manual_seed(0)
    cfg = EvaVisionConfig(
        image_size=56, hidden_size=24, num_hidden_layers=3, num_attention_heads=3, mlp_ratio=2.0
    )
    vit = EvaVisionTransformer(cfg).eval()
    for p in vit.parameters():
        torch.nn.init.normal_(p, std=0.2)
    sd = vit.state_dict()
    pixels = torch.randn(2, 3, 56, 56)
    patches = torch.nn.functional.conv2d(
        pixels, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14
    )
    x = (
        torch.cat([sd["cls_token"].expand(2, -1, -1), patches.flatten(2).transpose(1, 2)], 1)
        + sd["pos_embed"]
    )
    states = [x]
    for i in range(3):
        states.append(explicit_block(sd, i, states[-1], heads=3, eps=1e-6))
    with torch.no_grad():
        for layer in (-1, -2, 0, 2):
            torch.testing.assert_close(vit(pixels, select_layer=layer), states[layer], rtol=1e-4, atol=1e-5)


def test_eva_g_key_layout_and_shapes_match_lavis():
    with torch.device("meta"):
        vit = EvaVisionTransformer(EvaVisionConfig())
    shapes = {k: tuple(v.shape) for k, v in vit.state_dict().items()}
    assert shapes["cls_token"] == (1, 1, 1408)
    assert shapes["pos_embed"] == (1, 257, 1408)
    assert shapes["patch_embed.proj.weight"] == (1408, 3, 14, 14)
    assert shapes["blocks.38.attn.qkv.weight"] == (3 * 1408, 1408)
    assert shapes["blocks.38.attn.q_bias"] == shapes["blocks.38.attn.v_bias"] == (1408,)
    assert shapes["blocks.38.mlp.fc1.weight"] == (6144, 1408)
    assert "blocks.39.norm1.weight" not in shapes and "norm.weight" not in shapes
    assert not any("k_bias" in k or "qkv.bias" in k for k in shapes)


def count(cfg) -> dict[str, int]:
    with torch.device("meta"):
        model = BehaviorLlavaForCausalLM(cfg)
    return {g: sum(p.numel() for p in ps) for g, ps in model.parameter_groups().items()}


def eva_g_params(C=1408, I=6144, depth=39, patch=14, tokens=257) -> int:
    block = 2 * 2 * C + 3 * C * C + 2 * C + C * C + C + C * I + I + I * C + C
    return depth * block + 3 * patch * patch * C + C + C + tokens * C


def test_llama_vid_7b_and_13b_parameter_counts():
    # Published LLaMA-2 / Vicuna-v1.5 sizes: 6,738,415,616 and 13,015,864,320 parameters.
    seven, thirteen = count(bl_model.llama_vid_7b()), count(bl_model.llama_vid_13b())
    assert seven["language_model"] == 6_738_415_616
    assert thirteen["language_model"] == 13_015_864_320
    assert seven["vision_tower"] == thirteen["vision_tower"] == eva_g_params()
    assert seven["mm_projector"] == 1408 * 4096 + 4096 + 4096 * 4096 + 4096
    assert thirteen["attention_projectors"] == (768 * 1408 + 1408) + (1408 * 1408 + 1408) + (
        1408 * 5120 + 5120
    )


def test_tiny_is_tiny_and_uses_the_real_vocabularies():
    cfg = bl_model.tiny()
    assert cfg.text_config.vocab_size == 32000 and cfg.qformer_config.vocab_size == 30523
    assert sum(count(cfg).values()) < 10_000_000
