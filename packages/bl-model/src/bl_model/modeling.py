"""Behavior-LLaVA / LLaMA-VID model: vision tower -> text-guided context + content tokens -> LLaMA.

Per frame the LLM sees [ctx_t, content_t…]: the Q-Former turns the turn's instruction into M queries
(cross-attending to LayerNorm(CLS + patches)), the queries pick a softmax-weighted mix of the patches
(`ops.compress_video_tokens`), and the patches' mean (or `grid:k` pooling) is the content token.
Media placeholders in `input_ids` are filled by `masked_scatter` after a count check. `generate` is transformers'
`GenerationMixin.generate`: the media are encoded at prefill and the KV cache carries them after.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    CLIPVisionConfig,
    CLIPVisionModel,
    GenerationMixin,
    InstructBlipQFormerModel,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration import IGNORE_INDEX, BehaviorLlavaConfig, CompressMode, EvaVisionConfig
from .eva_vit import EvaVisionTransformer
from .ops import compress_video_tokens
from .packing import PACKED_ATTENTION
from .remote_code import AUTO_MAP, save_code


class VisionTower(nn.Module):
    """(S, 3, H, W) pixels -> (S, 1+N, C) features of layer `select_layer` (CLS first)."""

    def __init__(self, config: EvaVisionConfig | CLIPVisionConfig, select_layer: int):
        super().__init__()
        self.select_layer = select_layer
        # by model_type, not class: loaded as remote code, the config may come from another copy of this source
        if config.model_type == EvaVisionConfig.model_type:
            self.eva = EvaVisionTransformer(config)
        else:
            self.clip = CLIPVisionModel(config)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "eva"):
            return self.eva(pixels, select_layer=self.select_layer)
        out = self.clip(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[self.select_layer]


@dataclass
class MediaBatch:
    """The visual half of a processed batch (see `BehaviorLlavaProcessor.collate`).

    pixel_values (S, 3, H, W) all frames of all media; media_frame_counts (K,); media_is_video (K,);
    query_input_ids / query_attention_mask (Q, Lq): one Q-Former prompt per placeholder, in text order;
    query_media_index (Q,): the media item each placeholder shows.
    """

    pixel_values: torch.Tensor
    media_frame_counts: torch.Tensor
    media_is_video: torch.Tensor
    query_input_ids: torch.Tensor
    query_attention_mask: torch.Tensor
    query_media_index: torch.Tensor

    @classmethod
    def pop_from(cls, inputs: dict) -> MediaBatch | None:
        """Remove the media fields from a model-input dict; None when it holds no `pixel_values`."""
        values = {f.name: inputs.pop(f.name, None) for f in fields(cls)}
        return None if values["pixel_values"] is None else cls(**values)


MEDIA_FIELDS = tuple(f.name for f in fields(MediaBatch))


class BehaviorLlavaPreTrainedModel(PreTrainedModel):
    config_class = BehaviorLlavaConfig
    base_model_prefix = "language_model"  # the LLM; `base_model` is it, as for any LM with extra heads
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["LlamaDecoderLayer", "EvaBlock", "InstructBlipQFormerLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = 0.02
        if isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, EvaVisionTransformer):
            nn.init.trunc_normal_(module.cls_token, std=std)
            nn.init.trunc_normal_(module.pos_embed, std=std)
        elif isinstance(module, BehaviorLlavaForCausalLM):
            nn.init.normal_(module.query_tokens, std=std)
        elif hasattr(module, "q_bias") and module.q_bias is not None:
            nn.init.zeros_(module.q_bias)
            nn.init.zeros_(module.v_bias)
        elif type(module).__name__ == "LlamaRMSNorm":
            nn.init.ones_(module.weight)


class BehaviorLlavaForCausalLM(BehaviorLlavaPreTrainedModel, GenerationMixin):
    """LLaMA-VID for causal LM. Submodule names map 1:1 to the released checkpoint (see `convert`)."""

    def __init__(self, config: BehaviorLlavaConfig):
        super().__init__(config)
        C = config.vision_hidden_size
        D = config.qformer_config.hidden_size
        H = config.text_config.hidden_size
        self.vision_tower = VisionTower(config.vision_config, config.vision_select_layer)
        self.qformer = InstructBlipQFormerModel(config.qformer_config)  # vlm_att_encoder.bert
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query, D))  # vlm_att_query
        self.qformer_ln = nn.LayerNorm(C)  # vlm_att_ln
        self.query_projector = nn.Linear(D, C)  # vlm_att_projector
        self.key_projector = nn.Linear(C, C)  # vlm_att_key_projector
        self.val_projector = nn.Linear(C, H)  # vlm_att_val_projector
        self.mm_projector = nn.Sequential(nn.Linear(C, H), nn.GELU(), nn.Linear(H, H))  # mlp2x_gelu
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        if self.language_model.config._attn_implementation == "sdpa":
            # varlen attention for packed rows (cu_seq_lens_q / restarting position_ids), SDPA otherwise
            self.language_model.set_attn_implementation(PACKED_ATTENTION)
        self.post_init()
        self.apply_freeze_policy()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loader, then the config's freeze policy (loading replaces the parameters). Returns what
        transformers returns: the model, or (model, loading info) with `output_loading_info=True`."""
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).apply_freeze_policy()
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """transformers' writer, plus the model's source beside the weights and the config's `auto_map`, so
        `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` works without bl-model."""
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            save_code(save_directory, type(self))

    # ---- parameters -------------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by `FreezePolicy` field."""
        return {
            "vision_tower": list(self.vision_tower.parameters()),
            "qformer": [*self.qformer.parameters(), self.query_tokens, *self.qformer_ln.parameters()],
            "attention_projectors": [
                *self.query_projector.parameters(),
                *self.key_projector.parameters(),
                *self.val_projector.parameters(),
            ],
            "mm_projector": list(self.mm_projector.parameters()),
            "language_model": list(self.language_model.parameters()),
        }

    def apply_freeze_policy(self) -> None:
        """Set `requires_grad` from the config's `FreezePolicy`."""
        policy = self.config.freeze
        for group, params in self.parameter_groups().items():
            for p in params:
                p.requires_grad_(not getattr(policy, group))

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    # ---- vision -----------------------------------------------------------------------------------
    def _content_tokens(self, x: torch.Tensor, mean: torch.Tensor, mode: CompressMode) -> torch.Tensor:
        """x (T, N, C) patches, mean (T, C) -> (T, n, C) content tokens before `mm_projector`."""
        if mode.kind == "mean":
            return mean[:, None]  # (T, 1, C)
        if mode.kind == "none":
            return x  # (T, N, C)
        T, N, C = x.shape
        side = round(N**0.5)
        grid = x.transpose(1, 2).reshape(T, C, side, side)  # (T, C, s, s)
        pooled = F.avg_pool2d(grid, kernel_size=mode.grid_stride(side))  # (T, C, g, g), g = s // (s // k)
        return pooled.flatten(2).transpose(1, 2)  # (T, g*g, C)

    def encode_media(self, media: MediaBatch) -> torch.Tensor:
        """-> (total placeholder tokens, H): each placeholder's tokens, frame by frame [ctx, content…]."""
        counts = media.media_frame_counts.tolist()
        feats = self.vision_tower(media.pixel_values.to(self.vision_tower_dtype))  # (S, 1+N, C)
        frame_start = [0, *torch.tensor(counts).cumsum(0).tolist()]
        q_media = media.query_media_index.tolist()
        if any(m < 0 or m >= len(counts) for m in q_media):
            raise ValueError(f"query_media_index {q_media} out of range for {len(counts)} media items")

        # Q-Former over every (prompt, frame) pair, all media at once.
        pair_frame = torch.cat([torch.arange(frame_start[m], frame_start[m + 1]) for m in q_media])  # (R,)
        pair_query = torch.cat([torch.full((counts[m],), i) for i, m in enumerate(q_media)])  # (R,)
        pair_frame, pair_query = pair_frame.to(feats.device), pair_query.to(feats.device)
        R, M = pair_frame.numel(), self.config.num_query
        text_mask = media.query_attention_mask[pair_query]  # (R, Lq)
        qformer_out = self.qformer(
            input_ids=media.query_input_ids[pair_query],  # (R, Lq)
            attention_mask=torch.cat([text_mask.new_ones(R, M), text_mask], dim=1),  # (R, M+Lq)
            query_embeds=self.query_tokens.expand(R, -1, -1),  # (R, M, D)
            encoder_hidden_states=self.qformer_ln(feats)[pair_frame],  # (R, 1+N, C): CLS included
        ).last_hidden_state[:, :M]  # (R, M, D)
        text_q = self.query_projector(qformer_out)  # (R, M, C)

        tokens, start = [], 0
        for m in q_media:
            T = counts[m]
            x = feats[frame_start[m] : frame_start[m + 1], 1:]  # (T, N, C): CLS dropped
            q = text_q[start : start + T][None]  # (1, T, M, C)
            start += T
            ctx, mean = compress_video_tokens(x, q, self.key_projector.weight, self.key_projector.bias)
            ctx = self.val_projector(ctx[0])[:, None]  # (T, 1, H)
            mode = CompressMode.parse(
                self.config.video_compress if media.media_is_video[m] else self.config.image_compress
            )
            content = self.mm_projector(self._content_tokens(x, mean, mode))  # (T, n, H)
            tokens.append(torch.cat([ctx, content], dim=1).flatten(0, 1))  # (T*(1+n), H)
        return torch.cat(tokens)  # (total, H)

    @property
    def vision_tower_dtype(self) -> torch.dtype:
        return next(self.vision_tower.parameters()).dtype

    def embed_inputs(self, input_ids: torch.Tensor, media: MediaBatch | None) -> torch.Tensor:
        """input_ids (B, L) with placeholders -> inputs_embeds (B, L, H) with the media tokens filled in."""
        is_media = input_ids == self.config.media_token_id  # (B, L)
        embeds = self.get_input_embeddings()(input_ids.masked_fill(is_media, 0))  # (B, L, H)
        num_slots = int(is_media.sum())
        if media is None or media.query_media_index.numel() == 0:
            if num_slots:
                raise ValueError(
                    f"input_ids hold {num_slots} media placeholder tokens but no media were given"
                )
            return embeds
        media_embeds = self.encode_media(media)  # (total, H)
        if media_embeds.shape[0] != num_slots:
            raise ValueError(
                f"input_ids hold {num_slots} media placeholder tokens but the media give {media_embeds.shape[0]} "
                "tokens; build inputs with BehaviorLlavaProcessor for this config"
            )
        mask = is_media[..., None].expand_as(embeds)  # (B, L, H)
        return embeds.masked_scatter(mask, media_embeds.to(embeds.dtype))

    # ---- LM ---------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        media_frame_counts: torch.LongTensor | None = None,
        media_is_video: torch.BoolTensor | None = None,
        query_input_ids: torch.LongTensor | None = None,
        query_attention_mask: torch.LongTensor | None = None,
        query_media_index: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """input_ids/attention_mask/labels (B, L); media fields as in `MediaBatch`. Loss on labels != IGNORE_INDEX."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is not None and pixel_values is not None:
            raise ValueError(
                "media (pixel_values) need input_ids: their placeholder tokens say where the media tokens go; "
                "pass input_ids, or inputs_embeds already holding the media (model.embed_inputs(input_ids, media))"
            )
        if inputs_embeds is None:
            media = None
            if pixel_values is not None:
                media = MediaBatch(
                    pixel_values,
                    media_frame_counts,
                    media_is_video,
                    query_input_ids,
                    query_attention_mask,
                    query_media_index,
                )
            inputs_embeds = self.embed_inputs(input_ids, media)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    @torch.no_grad()
    def label_nll(self, **inputs) -> tuple[float, int]:
        """Summed next-token NLL over the tokens whose labels are not -100, and their count (for perplexity)."""
        labels = inputs.pop("labels")  # (B, L)
        logits = self(**inputs).logits[:, :-1]  # (B, L-1, V): logits[t] predict token t + 1
        targets = labels[:, 1:]  # (B, L-1)
        keep = targets != IGNORE_INDEX
        nll = F.cross_entropy(logits[keep].float(), targets[keep], reduction="sum")
        return float(nll), int(keep.sum())

    # ---- generation (transformers' GenerationMixin) ------------------------------------------------
    def prepare_inputs_for_generation(
        self, input_ids: torch.LongTensor, past_key_values=None, is_first_iteration: bool = False, **kwargs
    ) -> dict:
        """transformers' step inputs; the media go to `forward` only with the tokens that hold their placeholders:
        at prefill (every step with `use_cache=False`, an assistant model's first draft), never on a cached
        one-token decode step or a cache continuation whose placeholders are already in the cache."""
        media = {name: kwargs.pop(name) for name in MEDIA_FIELDS if kwargs.get(name) is not None}
        inputs = super().prepare_inputs_for_generation(
            input_ids, past_key_values=past_key_values, is_first_iteration=is_first_iteration, **kwargs
        )
        step = inputs.get("input_ids")  # None at prefill from inputs_embeds: forward then refuses any media
        if media and (step is None or (step.shape[1] > 1 and (step == self.config.media_token_id).any())):
            inputs |= media
        return inputs

    def _expand_inputs_for_generation(
        self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids=None, **model_kwargs
    ) -> tuple[torch.LongTensor, dict]:
        """transformers' row expansion (beams, `num_return_sequences`) with the media's Q-Former prompts repeated
        per copy of their row; the frames are shared, not copied."""
        media = MediaBatch.pop_from(model_kwargs)
        if media is not None and input_ids is not None and expand_size > 1:
            rows = self._query_rows(input_ids, media)
            order = torch.cat([queries.repeat(expand_size) for queries in rows])  # (Q * expand_size,)
            media = replace(
                media,
                query_input_ids=media.query_input_ids[order],
                query_attention_mask=media.query_attention_mask[order],
                query_media_index=media.query_media_index[order],
            )
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size, is_encoder_decoder, input_ids, **model_kwargs
        )
        return input_ids, model_kwargs | (vars(media) if media is not None else {})

    def _query_rows(self, input_ids: torch.Tensor, media: MediaBatch) -> list[torch.Tensor]:
        """The media prompts of each row of `input_ids` (B, L), in text order: B index tensors into the Q prompts."""
        counts, is_video = media.media_frame_counts.tolist(), media.media_is_video.tolist()
        per_query = [
            self.config.media_tokens(counts[m], bool(is_video[m])) for m in media.query_media_index.tolist()
        ]
        tokens = torch.tensor(per_query, dtype=torch.long)  # (Q,) placeholder tokens of each prompt
        per_row = (input_ids == self.config.media_token_id).sum(1).cpu()  # (B,)
        if int(tokens.sum()) != int(per_row.sum()):
            raise ValueError(
                f"input_ids hold {int(per_row.sum())} media placeholder tokens but the media give {int(tokens.sum())} "
                "tokens; build inputs with BehaviorLlavaProcessor for this config"
            )
        first = tokens.cumsum(0) - tokens  # (Q,) each prompt's first placeholder, counted over the batch
        row = torch.searchsorted(per_row.cumsum(0), first, right=True)  # (Q,) the row holding it
        device = media.query_input_ids.device
        return [(row == b).nonzero()[:, 0].to(device) for b in range(input_ids.shape[0])]
