"""Build BLIFT-style shards from media + engagement logs.

uv run apps/prepare --source youtube --input DL_DIR --out SHARDS [--captioner PATH] [--asr-cmd ...] [--workers N]
uv run apps/prepare --engine ray [--ray-address HOST:PORT] [--caption-actors 1:4] [--asr-actors 1:2] ...
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex

from bl_data.asr import AsrSpec
from bl_data.cli import ArgumentParser, existing_dir, output_dir, positive_int, run, setup_logging
from bl_data.pipeline import PrepareConfig, input_problems, part_problem, prepare


def _pool(text: str) -> tuple[int, int]:
    """argparse type: MIN:MAX actors (or N for N:N), 1 <= MIN <= MAX."""
    low, _, high = text.partition(":")
    try:
        pool = (int(low), int(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX actors, got {text!r}") from None
    if not 1 <= pool[0] <= pool[1]:
        raise argparse.ArgumentTypeError(f"expected 1 <= MIN <= MAX, got {text!r}")
    return pool


def _gpus(text: str) -> float:
    """argparse type: GPUs per actor, >= 0 (fractions share a GPU)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: list[str] | None = None, prog: str = "apps/prepare") -> int:
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, choices=["youtube", "reddit", "blift"])
    p.add_argument(
        "--input",
        required=True,
        type=existing_dir,
        help="yt-dlp folder, Reddit dump folder or BLIFT rows folder",
    )
    p.add_argument("--out", required=True, type=output_dir, help="shard directory (a rerun resumes)")
    p.add_argument("--workers", type=positive_int, default=1, help="media-analysis processes")
    p.add_argument(
        "--num-shards", type=positive_int, default=1, help="split the posts over this many machines"
    )
    p.add_argument("--shard-index", type=int, default=0, help="which part this machine prepares")
    p.add_argument("--samples-per-shard", type=positive_int, default=64)
    p.add_argument("--max-frames", type=positive_int, default=300)
    p.add_argument(
        "--captioner", type=existing_dir, help="a local transformers VLM directory for scene captions"
    )
    p.add_argument(
        "--asr-cmd",
        help="command that runs bl-asr (its `serve` mode is used), e.g. 'uv run --project packages/bl-asr bl-asr'",
    )
    p.add_argument(
        "--asr-model", default="large-v3", help="whisper model name or path given to the ASR command"
    )
    ray = p.add_argument_group("the Ray engine (pip extra bl-data[ray]; see the README's multi-node recipe)")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="local: this machine")
    ray.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster (default $RAY_ADDRESS; none: a local Ray)",
    )
    ray.add_argument(
        "--caption-actors", type=_pool, default=(1, 1), metavar="MIN:MAX", help="caption actor pool"
    )
    ray.add_argument("--caption-gpus", type=_gpus, default=1.0, help="GPUs per caption actor")
    ray.add_argument("--asr-actors", type=_pool, default=(1, 1), metavar="MIN:MAX", help="ASR actor pool")
    ray.add_argument("--asr-gpus", type=_gpus, default=0.0, help="GPUs per ASR actor (whisperx on GPU: 1)")
    args = p.parse_args(argv)
    problems = input_problems(args.source, args.input)
    if problems:
        p.error(f"--input: {args.input} is not a {args.source} input: {'; '.join(problems)}")
    if problem := part_problem(args.num_shards, args.shard_index):
        p.error(f"--shard-index: {problem}")
    if args.engine == "ray" and (args.num_shards != 1 or args.shard_index != 0):
        p.error(
            "--num-shards/--shard-index split the work by hand for the local engine; Ray splits it itself"
        )
    setup_logging(args.log_level)
    cfg = PrepareConfig(
        source=args.source,
        input=args.input,
        out=args.out,
        samples_per_shard=args.samples_per_shard,
        workers=args.workers,
        num_shards=args.num_shards,  # 1 and 0 under --engine ray (checked above)
        shard_index=args.shard_index,
        max_frames=args.max_frames,
        asr=_asr(args),
    )
    if args.engine == "ray":
        return _run_ray(args, cfg)

    captioner = None
    if args.captioner:
        from bl_data.captioner import VlmCaptioner

        captioner = VlmCaptioner(args.captioner)
    else:
        print(
            "no --captioner: scene captions are replaced by computed colours and tone (recorded in provenance)"
        )
    report = prepare(cfg, captioner)
    print(json.dumps(report, indent=2))
    return 0


def _asr(args: argparse.Namespace) -> AsrSpec | None:
    """The ASR stage of --asr-cmd / --asr-model (both engines run it the same way)."""
    if not args.asr_cmd:
        print("no --asr-cmd: samples carry no transcript")
        return None
    return AsrSpec(model=args.asr_model, command=tuple(shlex.split(args.asr_cmd)))


def _run_ray(args: argparse.Namespace, cfg: PrepareConfig) -> int:
    """`apps/prepare --engine ray`: the same samples and report as the local engine, on a Ray cluster."""
    try:
        from bl_data.engines.ray import RayConfig, prepare_ray
    except ImportError as err:
        raise ImportError(f"--engine ray needs Ray: install bl-data[ray] ({err})") from err
    rcfg = RayConfig(
        address=args.ray_address,
        caption_actors=args.caption_actors,
        caption_gpus=args.caption_gpus,
        asr_actors=args.asr_actors,
        asr_gpus=args.asr_gpus,
    )
    captioner = None
    if args.captioner:
        from bl_data.captioner import VlmCaptioner

        captioner = functools.partial(VlmCaptioner, args.captioner.resolve())
    report = prepare_ray(cfg, rcfg, captioner)
    print(json.dumps(report, indent=2))
    return 0


def console_script() -> int:
    """`bl-prepare`, the installed console script: `main` under its own name."""
    return run(functools.partial(main, prog="bl-prepare"), "bl-prepare")
