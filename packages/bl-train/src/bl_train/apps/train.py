"""Train Behavior-LLaVA with DeepSpeed. With no arguments: the `demo` recipe (tiny model, demo data, CPU).

    uv run apps/train [--recipe configs/behavior-llava-13b.yaml] [--section.key VALUE ...]
    uv run apps/train --recipe configs/behavior-llava-13b.yaml --optim.lr 1e-5 --print_config > my.yaml
    uv run apps/train --recipe configs/behavior-llava-13b.yaml --plan --gpus 8 --gpu-memory 80   # memory plan
    deepspeed --num_gpus 8 apps/train --recipe configs/behavior-llava-13b.yaml      # multi-GPU / multi-node

Options override the recipe file; `--help` lists every recipe field with its type, default and meaning.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

# one folder per environment: torch rebuilds an op whose build paths changed, so checkouts sharing one
# folder would rebuild it each time the other ran
_ENV = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "bl-torch-extensions" / _ENV))
# one intra-op thread per process, as torchrun gives each rank: on the CPU the demo's small ops gain nothing
# from more, and the threads fight the data-loader workers for the cores (2 cores: 0.36 s a step, 2.5 s with
# one thread per core); set OMP_NUM_THREADS to choose
os.environ.setdefault("OMP_NUM_THREADS", "1")

from bl_data.cli import LOG_LEVELS, UsageError, run, setup_logging  # noqa: E402
from bl_train.config import one_line, recipe_from_namespace, recipe_parser  # noqa: E402

ROOT = Path(__file__).resolve().parents[5]  # the checkout: ROOT/packages/bl-train/src/bl_train/apps/train.py
DEMO = ROOT / "configs" / "demo.yaml"
LOG_HELP = (
    f" --log-level LEVEL: one of {', '.join(LOG_LEVELS)} (default INFO). --plan --gpus N --gpu-memory GiB:"
    " print the recipe's memory plan (bl_train.plan: parameters, ZeRO states, activations, verdict) and exit."
)
log = logging.getLogger("apps.train")


def _take(argv: list[str], names: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """(the value of the last `--name VALUE` / `--name=VALUE` in argv, argv without them)."""
    value, rest, it = None, [], iter(argv)
    for arg in it:
        key, eq, inline = arg.partition("=")
        if key in names:
            value = inline if eq else next(it, None)
        else:
            rest.append(arg)
    return value, rest


def print_plan(recipe, gpus: str, gpu_memory: str | None) -> int:
    """`--plan`: bl_train.plan's memory plan of the recipe on --gpus GPUs of --gpu-memory GiB."""
    from bl_train.plan import PlanError, plan_recipe, render_plan

    if gpu_memory is None:
        raise UsageError("--gpu-memory: --plan needs each GPU's memory in GiB (e.g. 80)")
    try:
        n = int(gpus)
    except ValueError:
        raise UsageError(f"--gpus: expected an integer >= 1, got {gpus!r}") from None
    try:
        memory = float(gpu_memory)
    except ValueError:
        raise UsageError(f"--gpu-memory: expected a number of GiB (e.g. 80), got {gpu_memory!r}") from None
    try:
        print(render_plan(plan_recipe(recipe, n, memory)))
    except PlanError as err:
        raise UsageError(str(err)) from None
    return 0


def main(argv: list[str] | None = None, prog: str = "apps/train") -> int:
    argv = sys.argv[1:] if argv is None else argv
    _, argv = _take(
        argv, ("--local_rank", "--local-rank")
    )  # the deepspeed launcher's; LOCAL_RANK says the same
    log_level, argv = _take(argv, ("--log-level",))  # not a recipe field: kept out of --print_config
    if (log_level or "INFO").upper() not in LOG_LEVELS:
        raise UsageError(f"--log-level: expected one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    plan = "--plan" in argv  # not recipe fields: kept out of --print_config
    argv = [a for a in argv if a != "--plan"]
    gpus, argv = _take(argv, ("--gpus",))
    gpu_memory, argv = _take(argv, ("--gpu-memory",))
    if not plan and (gpus or gpu_memory):
        raise UsageError(f"{'--gpus' if gpus else '--gpu-memory'}: only with --plan")
    recipe_file, argv = _take(argv, ("--recipe",))
    if recipe_file is None and not {"-h", "--help"} & set(argv):
        recipe_file = str(DEMO)  # the demo recipe by default
    if recipe_file is not None:
        argv = ["--recipe", recipe_file, *argv]  # first: every other option overrides it, wherever it stands
    parser = recipe_parser(prog, __doc__.splitlines()[0] + LOG_HELP)
    try:
        namespace = parser.parse_args(argv)
        recipe = recipe_from_namespace(parser, namespace)
    except (argparse.ArgumentError, ValueError) as err:
        raise UsageError(one_line(err)) from None
    if plan:
        return print_plan(recipe, gpus or "1", gpu_memory)
    setup_logging((log_level or "INFO").upper())
    if recipe.train.finetune == "qlora":
        from bl_train.lora import qlora_problem

        if problem := qlora_problem():  # before any data is built or a process group is joined
            raise UsageError(f"--train.finetune: {problem}")
    if recipe.data.build_demo:
        from bl_train.demo import build_demo_data, wait_for_demo_data

        root = Path(recipe.data.processor).parent
        log.info("demo data in %s", root)
        build_demo_data(root) if os.environ.get("RANK", "0") == "0" else wait_for_demo_data(root)
    from bl_train.checkpoint import CheckpointNotFound
    from bl_train.engine import Trainer
    from bl_train.lora import LoraSetupError

    try:
        summary = Trainer(recipe).run()
    except CheckpointNotFound as err:
        raise UsageError(f"--train.resume: {err}") from None
    except LoraSetupError as err:
        raise UsageError(str(err)) from None
    losses = [x for x in summary.losses if x == x]
    print(
        json.dumps(
            {
                "recipe": recipe.name,
                "rank": int(os.environ.get("RANK", "0")),
                "steps": summary.steps,
                "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None,
                "skipped_samples": summary.skipped_samples,
                "non_finite_steps": summary.bad_steps,
                "skipped_steps": summary.skipped_steps,
                "final": str(summary.final_dir),
                "trainable_params": summary.trainable_params,
                "total_params": summary.total_params,
            },
            indent=2,
        )
    )
    return 0


def console_script() -> int:
    """`bl-train`, the installed console script: `main` under its own name."""
    return run(functools.partial(main, prog="bl-train"), "bl-train")
