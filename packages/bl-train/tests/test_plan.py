"""The memory planner: parameter counts, DeepSpeed's estimators, the activation model against peaks measured on
the CPU at small width, the verdict, and `apps/train --plan`'s errors."""

from __future__ import annotations

import dataclasses
import importlib.util
import weakref
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest
import torch
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import bl_model
from bl_data.cli import run
from bl_model import BehaviorLlavaForCausalLM
from bl_train import plan as P
from bl_train.config import Recipe, load_recipe

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs"

_loader = SourceFileLoader("apps_train", str(ROOT / "apps" / "train"))
_app = importlib.util.module_from_spec(importlib.util.spec_from_loader("apps_train", _loader))
_loader.exec_module(_app)
train_main = _app.main


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages that ops create while the mode is on (what a caching allocator must
    hold), leaving out `exclude_at_end`: storages alive at the end whose data pointer is given (the .grads)."""

    def __init__(self, external: list[torch.Tensor]):
        super().__init__()
        self.external = {t.untyped_storage().data_ptr() for t in external}  # weights, inputs: not counted
        self.events: list[tuple[int, int]] = []  # (allocation number, +bytes / -bytes) in order
        self.alive: dict[
            int, tuple[int, weakref.ref, int]
        ] = {}  # id(storage) -> (allocation, ref, data pointer)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            st = t.untyped_storage()
            if id(st) in self.alive or st.data_ptr() in self.external or st.nbytes() == 0:
                continue
            key, n, number = id(st), st.nbytes(), len(self.events)  # a fresh number: id()s are reused
            self.events.append((number, n))
            ref = weakref.ref(st, lambda _, key=key, number=number, n=n: self._free(key, number, n))
            self.alive[key] = (number, ref, st.data_ptr())
        return out

    def _free(self, key: int, number: int, n: int) -> None:
        self.events.append((number, -n))
        self.alive.pop(key, None)

    def peak(self, exclude_at_end: set[int]) -> int:
        skip = {number for number, _, ptr in self.alive.values() if ptr in exclude_at_end}
        live = best = 0
        for key, n in self.events:
            if key not in skip:
                live += n
                best = max(best, live)
        return best


def small_llama(hidden: int, intermediate: int, layers: int, vocab: int) -> bl_model.BehaviorLlavaConfig:
    config = bl_model.tiny()
    t = config.text_config
    t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.vocab_size = (
        hidden,
        intermediate,
        layers,
        vocab,
    )
    t.num_attention_heads = t.num_key_value_heads = hidden // 64
    t.head_dim = 64
    return config


def measured_activation_peak(config, tokens: int, checkpointing: bool) -> int:
    """Peak of a bf16 forward + backward on text of `tokens` tokens, parameter gradients left out."""
    torch.manual_seed(0)
    model = BehaviorLlavaForCausalLM(config).to(torch.bfloat16).train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(3, config.text_config.vocab_size, (1, tokens))
    mode = LiveBytes([*model.parameters(), *model.buffers(), ids])
    with mode:
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    grads = {p.grad.untyped_storage().data_ptr() for p in model.parameters() if p.grad is not None}
    return mode.peak(grads)


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize(
    ("hidden", "intermediate", "layers", "vocab"),
    [
        (512, 1376, 4, 512),
        (256, 688, 2, 32000),
    ],  # the layers dominate; the loss over the real vocabulary does
)
def test_activation_model_within_20_percent_of_the_measured_cpu_peak(
    hidden, intermediate, layers, vocab, checkpointing
):
    config = small_llama(hidden, intermediate, layers, vocab)
    measured = measured_activation_peak(config, 1024, checkpointing)
    modelled = P.activation_bytes(P.model_shape(config), 1024, 0, 2, checkpointing)["peak"]
    assert abs(modelled - measured) <= 0.2 * measured, (
        f"modelled {modelled / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB"
    )


def _shape(trainable: int, frozen: int = 0, largest: int = 10**8) -> P.ModelShape:
    shape = P.model_shape(bl_model.tiny())
    return dataclasses.replace(shape, total=trainable + frozen, trainable=trainable, largest_layer=largest)


@pytest.mark.parametrize("gpus", [1, 8, 16])
@pytest.mark.parametrize(
    ("stage", "offload_opt", "offload_param"),
    [(2, "none", "none"), (2, "cpu", "none"), (3, "none", "none"), (3, "cpu", "none"), (3, "cpu", "cpu")],
)
def test_model_states_add_up_to_deepspeeds_estimators(gpus, stage, offload_opt, offload_param):
    """All parameters trainable: weights + gradients + optimizer = DeepSpeed's own GPU estimate, CPU = its CPU one."""
    recipe = Recipe()
    recipe.deepspeed = dataclasses.replace(
        recipe.deepspeed, stage=stage, offload_optimizer=offload_opt, offload_param=offload_param
    )
    P_, L = 13 * 10**9, 2 * 10**8
    states = P.model_state_bytes(_shape(P_, largest=L), recipe, gpus)
    nodes, per_node = (gpus + 7) // 8, min(gpus, 8)
    if stage == 2:
        cpu, gpu = estimate_zero2_model_states_mem_needs(P_, per_node, nodes, offload_opt == "cpu")
    else:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            P_, L, per_node, nodes, offload_opt == "cpu", offload_param == "cpu"
        )
    assert abs(states["weights"] + states["gradients"] + states["optimizer"] - gpu) <= 8  # integer division
    assert states["cpu_per_node"] == cpu


def test_frozen_parameters_cost_only_their_16_bit_weights():
    recipe = Recipe()
    recipe.deepspeed = dataclasses.replace(recipe.deepspeed, stage=2, offload_optimizer="none")
    base = P.model_state_bytes(_shape(10**9), recipe, 8)
    more = P.model_state_bytes(_shape(10**9, frozen=10**9), recipe, 8)
    assert more["weights"] - base["weights"] == 2 * 10**9
    assert (more["gradients"], more["optimizer"]) == (base["gradients"], base["optimizer"])


def test_parameter_counts_match_a_built_model():
    config = bl_model.tiny()
    model = BehaviorLlavaForCausalLM(config)
    shape = P.model_shape(config)
    assert shape.total == sum(p.numel() for p in model.parameters())
    assert shape.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad) < shape.total
    assert shape.vision_tokens == 1 + (224 // 14) ** 2 and not shape.vision_trainable


def test_13b_fast_fits_8x80_with_the_papers_optimizer_partition():
    recipe = load_recipe(
        CONFIGS / "behavior-llava-13b-fast.yaml",
        ["--model.pretrained", "null", "--model.builder", "llama_vid_13b"],
    )
    plan = P.plan_recipe(recipe, 8, 80)
    trainable = plan.shape.trainable
    assert (
        13.0e9 < trainable < 13.1e9 and 1.1e9 < plan.shape.frozen < 1.3e9
    )  # Vicuna-13B + projector; EVA + Q-Former
    assert plan.states["optimizer"] == 12 * trainable // 8  # fp32 master + Adam moments: ~19.6 GB per GPU
    assert plan.fits and plan.largest_micro_batch >= recipe.train.micro_batch_size
    with pytest.raises(P.PlanError, match="does not fit 8 x 40 GiB even at micro-batch 1"):
        P.plan_recipe(recipe, 8, 40)  # smaller cards: the offloading recipe
    offload = load_recipe(
        CONFIGS / "behavior-llava-13b.yaml",
        ["--model.pretrained", "null", "--model.builder", "llama_vid_13b"],
    )
    assert P.plan_recipe(offload, 8, 40).largest_micro_batch >= 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--gpus", "8", "--gpu-memory", "abc"],
            "--gpu-memory: expected a number of GiB (e.g. 80), got 'abc'",
        ),
        (["--gpus", "8", "--gpu-memory", "0"], "--gpu-memory: expected a card's memory in GiB"),
        (["--gpus", "8"], "--gpu-memory: --plan needs each GPU's memory"),
        (["--gpus", "0", "--gpu-memory", "80"], "--gpus: must be >= 1, got 0"),
        (
            [
                "--gpus",
                "1",
                "--gpu-memory",
                "24",
                "--model.pretrained",
                "null",
                "--model.builder",
                "llama_vid_13b",
            ],
            "does not fit 1 x 24 GiB even at micro-batch 1",
        ),
        (
            ["--gpus", "8", "--gpu-memory", "80"],
            "--model.pretrained: no config.json in checkpoints/llama-vid-13b",
        ),
    ],
)
def test_plan_bad_input_is_one_line_exit_2(args, says, capsys):
    code = run(
        train_main, "apps/train", ["--recipe", str(CONFIGS / "behavior-llava-13b.yaml"), "--plan", *args]
    )
    err = capsys.readouterr().err
    assert code == 2 and says in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_plan_of_an_unreadable_config_is_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{not json")
    code = run(
        train_main, "apps/train", ["--plan", "--gpu-memory", "80", "--model.pretrained", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--model.pretrained:" in err and "is not a Behavior-LLaVA config" in err, err


def test_plan_prints_the_table(capsys):
    args = [
        "--recipe",
        str(CONFIGS / "behavior-llava-7b.yaml"),
        "--plan",
        "--gpus",
        "8",
        "--gpu-memory",
        "80",
        "--model.pretrained",
        "null",
        "--model.builder",
        "llama_vid_7b",
    ]
    assert run(train_main, "apps/train", args) == 0
    out = capsys.readouterr().out
    for line in ("parameters", "weights", "gradients", "optimizer states", "activations", "CPU RAM per node"):
        assert line in out
    assert "fits at micro-batch 4; largest micro-batch that fits:" in out and "without" in out
