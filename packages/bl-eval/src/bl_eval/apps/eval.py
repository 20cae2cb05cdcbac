"""Evaluate a checkpoint on the paper's benchmarks with the paper's protocols.

    uv run apps/eval --model PATH --tasks caer,emotion6 --data-root DIR [--out DIR] [--limit N] [--seed S]
    uv run apps/eval --list          # every task with its protocol, metric and expected data layout
    uv run apps/eval --lmms -- --model behavior_llava --model_args pretrained=PATH --tasks mme   # lmms-eval

PATH holds config.json + weights and the processor files beside them (or give --processor DIR).
A rerun with the same --out resumes from its per-sample cache.
"""

from __future__ import annotations

import functools
import json
import sys
import textwrap
from pathlib import Path

from bl_data.cli import ArgumentParser, existing_dir, model_dir, positive_int, run, setup_logging


def list_tasks() -> str:
    """One block per task of `bl_eval.tasks.TASKS`: name, group, protocol, metric, then the data layout."""
    from bl_eval.tasks import TASKS

    blocks = []
    for name, spec in sorted(TASKS.items()):
        head = f"{name}  [{spec.group}]  protocol={spec.protocol}  metric={spec.metric}"
        if spec.shots:
            head += f"  shots={spec.shots}"
        body = f"data: DATA_ROOT/{spec.subdir}\n{spec.layout.strip()}"
        if spec.notes:
            body += f"\nnotes: {spec.notes.strip()}"
        blocks.append(head + "\n" + textwrap.indent(body, "    "))
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None, prog: str = "apps/eval") -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--lmms"]:  # everything after `--lmms [--]` is lmms-eval's (needs bl-eval[lmms])
        from bl_eval.lmms import launch

        return launch(argv[2:] if argv[1:2] == ["--"] else argv[1:])
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--list", action="store_true", help="list the tasks and exit")
    p.add_argument(
        "--model", type=model_dir, help="model directory (config.json + weights) or a LoRA adapter folder"
    )
    p.add_argument("--processor", type=existing_dir, help="processor directory (default: MODEL)")
    p.add_argument("--tasks", help="comma-separated task names (see --list)")
    p.add_argument(
        "--data-root", type=existing_dir, help="folder holding each benchmark in its published layout"
    )
    p.add_argument("--out", type=Path, help="output folder (default: runs/eval/<model name>)")
    p.add_argument("--limit", type=positive_int, help="at most this many examples per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    args = p.parse_args(argv)
    if args.list:
        print(list_tasks())
        return 0
    missing = [
        flag
        for flag, value in (("--model", args.model), ("--tasks", args.tasks), ("--data-root", args.data_root))
        if not value
    ]
    if missing:
        p.error(f"{', '.join(missing)} required (or --list)")
    from bl_eval.runner import evaluate, resolve_tasks

    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not names:
        p.error("--tasks: none named")
    try:
        tasks = resolve_tasks(names)  # before the model loads
    except ValueError as err:
        p.error(f"--tasks: {err}")
    setup_logging(args.log_level)

    out = args.out or Path("runs") / "eval" / args.model.resolve().name
    results = evaluate(
        args.model,
        tasks,
        args.data_root,
        out,
        processor_path=args.processor,
        limit=args.limit,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(
        json.dumps(
            {
                name: entry["metrics"] | {"n": entry["n"], "failed": entry["failed"]}
                for name, entry in results["tasks"].items()
            },
            indent=2,
        )
    )
    print(f"wrote {out}/results.json, samples.jsonl (a failed sample's error), results.md")
    return 0


def console_script() -> int:
    """`bl-eval`, the installed console script: `main` under its own name."""
    return run(functools.partial(main, prog="bl-eval"), "bl-eval")
