"""Memory planner: will a recipe fit N GPUs of G GiB, and at which micro-batch? No GPU, no weights needed.

    plan = plan_recipe(recipe, gpus=8, gpu_memory_gib=80)      # apps/train --recipe R --plan --gpus 8 --gpu-memory 80
    print(render_plan(plan))

- Parameters are counted on a meta-device model built from the recipe's model config (`<pretrained>/config.json`
  or the builder), with the recipe's freeze policy: total, trainable, frozen.
- Model states per GPU under the recipe's ZeRO stage and offload. For the trainable parameters the total is
  DeepSpeed's own estimator (`estimate_zero2_model_states_mem_needs` / `..._zero3_...`: 2 bytes of 16-bit
  weights, 2 of 16-bit gradients, 4 + 4 + 8 of fp32 gradients, master weights and Adam moments, partitioned
  as the stage says), split into weights / gradients / optimizer; frozen parameters add their 16-bit weights
  (partitioned at stage 3). ZeRO's bucket buffers: 4.5x the bucket sizes with overlap_comm (DeepSpeed docs).
- Activations per micro-batch (`activation_bytes`): a byte count of what each LLaMA layer saves for backward
  (HF's LlamaDecoderLayer: RMSNorm's fp32 input and normalised output, q / k / v / o, the SwiGLU's four
  intermediate tensors), only each layer's input under gradient checkpointing plus one recomputed layer,
  the loss's fp32 log-softmax and gradients (12 bytes per token per vocabulary entry), and the frozen vision
  tower's largest transient (one EVA block over every frame of the micro-batch). The LLM part is checked
  against peaks measured on the CPU at small width (test_plan.py: within 5% today, 20% asserted); the vision
  term is not (CPU attention differs); the GPU script puts `torch.cuda.max_memory_allocated` beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import bl_model
from bl_model import BehaviorLlavaConfig, BehaviorLlavaForCausalLM
from bl_model.configuration import CompressMode

if TYPE_CHECKING:  # only annotations: the GPU check loads this file without bl_train's dependencies
    from .config import Recipe

GIB = 1 << 30
RESERVE_GIB = 2.5  # CUDA context, NCCL buffers, allocator fragmentation: never available to tensors
MAX_MICRO_BATCH = 64
_FREEZE = (
    "freeze_vision_tower",
    "freeze_qformer",
    "freeze_attention_projectors",
    "freeze_mm_projector",
    "freeze_language_model",
)


class PlanError(ValueError):
    """The planner cannot answer: an unreadable model config, bad hardware numbers, nothing fits."""

    def __init__(self, option: str, problem: str):
        super().__init__(f"{option}: {problem}")
        self.option = option


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs from a model config: parameter counts and the widths the activations scale with."""

    total: int
    trainable: int
    largest_layer: int  # parameters of the largest module (ZeRO-3 gathers one at a time)
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    vision_trainable: bool
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    vision_tokens: int  # per frame, CLS included
    content_tokens: int  # LLM tokens per frame besides the context token

    @property
    def frozen(self) -> int:
        return self.total - self.trainable


def load_model_config(recipe: Recipe) -> BehaviorLlavaConfig:
    """The recipe's model config with its freeze policy: `<pretrained>/config.json`, else the builder's."""
    m = recipe.model
    freeze = {k: getattr(m, k) for k in _FREEZE}
    if m.pretrained:
        path = Path(m.pretrained) / "config.json"
        if not path.is_file():
            raise PlanError(
                "--model.pretrained",
                f"no config.json in {m.pretrained} (convert the checkpoint first, or plan the released shapes "
                "with --model.pretrained null --model.builder llama_vid_7b / llama_vid_13b)",
            )
        try:
            config = BehaviorLlavaConfig.from_pretrained(m.pretrained)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise PlanError("--model.pretrained", f"{path} is not a Behavior-LLaVA config: {err}") from None
    elif m.builder:
        config = getattr(bl_model, m.builder)()
    else:
        raise PlanError("--model.builder", "set model.builder or model.pretrained")
    config.update(freeze)
    return config


def model_shape(config: BehaviorLlavaConfig) -> ModelShape:
    """Counts parameters on the meta device (no memory, no initialisation cost beyond module construction)."""
    with torch.device("meta"):
        model = BehaviorLlavaForCausalLM(config)
    model.apply_freeze_policy()
    params = list(model.parameters())
    largest = max(sum(p.numel() for p in mod.parameters(recurse=False)) for mod in model.modules())
    text, vision = config.text_config, config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    return ModelShape(
        total=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in params if p.requires_grad),
        largest_layer=largest,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        heads=text.num_attention_heads,
        kv_heads=text.num_key_value_heads,
        vocab=text.vocab_size,
        vision_trainable=any(p.requires_grad for p in model.vision_tower.parameters()),
        vision_hidden=vision.hidden_size,
        vision_intermediate=int(vision.hidden_size * vision.mlp_ratio),
        vision_layers=vision.num_hidden_layers,
        vision_tokens=1 + patches,
        content_tokens=CompressMode.parse(config.video_compress).num_tokens(patches),
    )


# ---------------------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------------------


def llama_layer_saved_bytes(shape: ModelShape, s: int) -> int:
    """Bytes per token one LLaMA decoder layer keeps for backward, s bytes per element.

    RMSNorm (HF): fp32 input (4h) and its normalised value in the input dtype (s·h), and its output (s·h,
    saved by the next linear), twice; q, k, v after RoPE and the attention output (s·(2h + 2·h_kv)), the
    o_proj input (s·h); SwiGLU: gate, up, silu(gate), silu(gate)·up (4·s·i); the attention's fp32 LSE.
    """
    h, i, kv = shape.hidden, shape.intermediate, shape.hidden * shape.kv_heads // shape.heads
    norm = 4 * h + 2 * s * h
    return 2 * norm + s * (3 * h + 2 * kv) + 4 * s * i + 4 * shape.heads


def activation_bytes(
    shape: ModelShape, tokens: int, frames: int, s: int, checkpointing: bool
) -> dict[str, int]:
    """Activation bytes of one micro-batch: `tokens` LLM tokens (packed), `frames` video frames.

    Returns the saved LLM activations, the transient peaks of the loss, the backward and the vision tower, and
    `peak`: the most that is live at once.
    """
    h, V = shape.hidden, shape.vocab
    layer = llama_layer_saved_bytes(shape, s)
    per_layer = s * h if checkpointing else layer  # only the layer input when the layer is recomputed
    saved = tokens * (shape.layers * per_layer + s * h + 4 * h + 2 * s * h)  # + embeddings out, final norm
    media = (
        frames * (1 + shape.content_tokens) * s * (shape.vision_hidden + 2 * h)
    )  # mm_projector input, GELU
    # loss (the engine keeps only .loss, so the logits die after their fp32 upcast): the fp32 log-softmax
    # (saved), its gradient and the logits' fp32 gradient at the start of the backward; the forward's
    # logits + upcast + log-softmax, (s + 8)·V, is never more
    loss = tokens * V * 12
    # backward of a layer: its recomputed activations (checkpointing) and a residual-stream gradient or two;
    # the rest of its gradients replace saved tensors as they are freed
    backward = tokens * ((layer if checkpointing else 0) + 2 * s * h)
    vision_block = s * (3 * shape.vision_hidden + 2 * shape.vision_intermediate)  # input, attn out, fc1, GELU
    vision = frames * shape.vision_tokens * vision_block
    if shape.vision_trainable:  # every block's activations kept (not validated: every recipe freezes it)
        vision *= shape.vision_layers
    peak = max(saved + media + max(loss, backward), vision + media)
    return dict(saved=saved + media, loss=loss, backward=backward, vision=vision, peak=peak)


# ---------------------------------------------------------------------------------------------------------
# Model states
# ---------------------------------------------------------------------------------------------------------


def model_state_bytes(shape: ModelShape, recipe: Recipe, gpus: int) -> dict[str, int]:
    """Per-GPU weights / gradients / optimizer bytes and ZeRO buffers, and CPU RAM per node (DeepSpeed's
    estimator), under the recipe's ZeRO stage and offload. Trainable parameters cost, per DeepSpeed's
    estimators: 16-bit weights (2), 16-bit + fp32 gradients (2 + 4), fp32 master weights + Adam moments
    (4 + 8), partitioned by the stage; at stage 3 the largest layer is gathered (4 per parameter) and the
    16-bit gradient is not counted. Frozen parameters cost their 16-bit weights only."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    ds = recipe.deepspeed
    P, frozen, N = shape.trainable, shape.frozen, gpus
    nodes, per_node = math.ceil(gpus / 8), min(gpus, 8)
    off_opt, off_param = ds.offload_optimizer != "none", ds.offload_param != "none"
    shard = N if ds.stage >= 1 else 1  # optimizer states are partitioned from stage 1
    if ds.stage == 3:
        weights = 4 * shape.largest_layer + (0 if off_param else 2 * (P + frozen) // N)
        grads = 0 if off_opt else 4 * P // N
        cpu = estimate_zero3_model_states_mem_needs(
            P, shape.largest_layer, per_node, nodes, off_opt, off_param
        )[0]
    else:
        weights = 2 * (P + frozen)
        grads = 0 if off_opt else (2 * P // N if ds.stage == 2 else 2 * P) + 4 * P // shard
        cpu = estimate_zero2_model_states_mem_needs(P, per_node, nodes, off_opt)[0]
    optimizer = 0 if off_opt else 12 * P // shard
    buckets = (ds.reduce_bucket_size + ds.allgather_bucket_size) * 2 * (4.5 if ds.overlap_comm else 1.0)
    return dict(
        weights=weights, gradients=grads, optimizer=optimizer, buckets=int(buckets), cpu_per_node=int(cpu)
    )


# ---------------------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    recipe: str
    gpus: int
    gpu_memory_gib: float
    shape: ModelShape
    states: dict[str, int]
    tokens: int  # per micro-batch of the recipe
    frames: int
    activations: dict[str, int]  # the recipe's micro-batch, its checkpointing setting
    activations_other: dict[str, int]  # the same micro-batch with checkpointing flipped
    checkpointing: bool
    micro_batch: int
    largest_micro_batch: int  # 0: not even 1 fits

    @property
    def fixed(self) -> int:
        return sum(self.states[k] for k in ("weights", "gradients", "optimizer", "buckets"))

    @property
    def usable(self) -> int:
        return int((self.gpu_memory_gib - RESERVE_GIB) * GIB)

    @property
    def total(self) -> int:
        return self.fixed + self.activations["peak"]

    @property
    def fits(self) -> bool:
        return self.total <= self.usable


def plan_recipe(recipe: Recipe, gpus: int, gpu_memory_gib: float) -> Plan:
    """The memory plan of `recipe` on `gpus` GPUs of `gpu_memory_gib` GiB each; PlanError when nothing fits."""
    if gpus < 1:
        raise PlanError("--gpus", f"must be >= 1, got {gpus}")
    if not RESERVE_GIB < gpu_memory_gib <= 1024:
        raise PlanError(
            "--gpu-memory",
            f"expected a card's memory in GiB ({RESERVE_GIB} < G <= 1024), got {gpu_memory_gib:g}",
        )
    s = 4 if recipe.train.precision == "fp32" else 2
    shape = model_shape(load_model_config(recipe))
    states = model_state_bytes(shape, recipe, gpus)
    ckpt, d = recipe.model.gradient_checkpointing, recipe.data

    def acts(micro_batch: int, checkpointing: bool) -> dict[str, int]:
        return activation_bytes(
            shape, micro_batch * d.max_length, micro_batch * d.max_frames, s, checkpointing
        )

    mb = recipe.train.micro_batch_size
    plan = Plan(
        recipe.name,
        gpus,
        gpu_memory_gib,
        shape,
        states,
        mb * d.max_length,
        mb * d.max_frames,
        acts(mb, ckpt),
        acts(mb, not ckpt),
        ckpt,
        mb,
        0,
    )
    budget = plan.usable - plan.fixed
    plan.largest_micro_batch = max(
        (b for b in range(1, MAX_MICRO_BATCH + 1) if acts(b, ckpt)["peak"] <= budget), default=0
    )
    if plan.largest_micro_batch == 0:
        need = (plan.fixed + acts(1, ckpt)["peak"]) / GIB + RESERVE_GIB
        raise PlanError(
            "--gpu-memory",
            f"{recipe.name} does not fit {gpus} x {gpu_memory_gib:g} GiB even at micro-batch 1: it needs "
            f"{need:.1f} GiB per GPU (more GPUs, a higher ZeRO stage or CPU offload would lower it)",
        )
    return plan


def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def render_plan(plan: Plan) -> str:
    """The plan as a short report (what `apps/train --plan` prints)."""
    sh, st, a, other = plan.shape, plan.states, plan.activations, plan.activations_other
    on, off = ("with", "without") if plan.checkpointing else ("without", "with")
    verdict = "fits" if plan.fits else "does NOT fit"
    lines = [
        f"memory plan: {plan.recipe} on {plan.gpus} x {plan.gpu_memory_gib:g} GiB "
        f"(usable {_gib(plan.usable)} GiB per GPU after {RESERVE_GIB} GiB reserve)",
        f"  parameters         total {sh.total / 1e9:.3f} B, trainable {sh.trainable / 1e9:.3f} B, "
        f"frozen {sh.frozen / 1e9:.3f} B",
        f"  weights            {_gib(st['weights'])} GiB per GPU",
        f"  gradients          {_gib(st['gradients'])} GiB per GPU",
        f"  optimizer states   {_gib(st['optimizer'])} GiB per GPU",
        f"  ZeRO buckets       {_gib(st['buckets'])} GiB per GPU",
        f"  activations        {_gib(a['peak'])} GiB per micro-batch of {plan.micro_batch} "
        f"({plan.tokens} tokens, {plan.frames} frames) {on} gradient checkpointing; "
        f"{_gib(other['peak'])} GiB {off}",
        f"  CPU RAM per node   {_gib(st['cpu_per_node'])} GiB (DeepSpeed's estimate)",
        f"  total per GPU      {_gib(plan.total)} GiB of {_gib(plan.usable)} usable: {verdict} at micro-batch "
        f"{plan.micro_batch}; largest micro-batch that fits: {plan.largest_micro_batch}",
    ]
    return "\n".join(lines)
