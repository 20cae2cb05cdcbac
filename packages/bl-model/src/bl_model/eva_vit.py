"""EVA ViT-G/14, the BLIP-2 / InstructBLIP image encoder, with LAVIS' parameter names.

Matches `lavis.models.eva_vit.create_eva_vit_g`: patch 14, absolute position embedding, pre-norm blocks
(LayerNorm eps 1e-6), q and v biases with a zero k bias, GELU MLP, no layer scale, no final norm.
State-dict keys are those of `eva_vit_g.pth` (`blocks.{i}.attn.q_bias`, …), so the checkpoint loads as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import EvaVisionConfig


class EvaAttention(nn.Module):
    def __init__(self, config: EvaVisionConfig):
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if config.qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if config.qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat(
                [self.q_bias, torch.zeros_like(self.v_bias), self.v_bias]
            )  # (3C,), k has no bias
        qkv = F.linear(x, self.qkv.weight, bias)  # (B, L, 3C)
        q, k, v = qkv.view(B, L, 3, self.num_heads, C // self.num_heads).permute(
            2, 0, 3, 1, 4
        )  # 3 x (B, h, L, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, L, d)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))  # (B, L, C)


class EvaMlp(nn.Module):
    def __init__(self, config: EvaVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EvaBlock(nn.Module):
    def __init__(self, config: EvaVisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = EvaAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = EvaMlp(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, config: EvaVisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(
            config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(pixels).flatten(2).transpose(1, 2)  # (B, 3, H, W) -> (B, N, C)


class EvaVisionTransformer(nn.Module):
    """(B, 3, 224, 224) pixels -> hidden states: embeddings then each block's output, each (B, 1+N, C)."""

    def __init__(self, config: EvaVisionConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))
        self.blocks = nn.ModuleList(EvaBlock(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(self, pixels: torch.Tensor, select_layer: int = -1) -> torch.Tensor:
        """Return hidden state `select_layer` (Python indexing over embeddings + D blocks): (B, 1+N, C)."""
        num_states = len(self.blocks) + 1
        stop = select_layer % num_states
        x = self.patch_embed(pixels)  # (B, N, C)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # (B, 1+N, C)
        for block in self.blocks[:stop]:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x
