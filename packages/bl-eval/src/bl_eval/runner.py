"""Run tasks on a checkpoint: batched, resumable from a per-sample cache, greedy, seeded.

    results = evaluate("ckpt", ["caer", "emotion6"], "benchmarks/", "out/")

`out_dir` receives `results.json` (metrics, n, spec hash, protocol per task; model path and config, package
versions, git hash, date), `samples.jsonl` (one line per sample) and `results.md` (ours beside the paper's
LLaMA-VID / Ad-LLaVA / Behavior-LLaVA rows). Predictions are cached in
`out_dir/cache/<task>/<spec_hash>.jsonl`, one line per example id, appended as batches finish: a rerun
computes only the ids not there. A cache belongs to one model: reusing `out_dir` for another is an error.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed

from bl_data.progress import progress
from bl_model import BehaviorLlavaForCausalLM, BehaviorLlavaProcessor
from bl_model.inference import load

from .metrics import METRICS, SCORE_METRICS
from .protocols import PROTOCOLS, Record
from .spec import TaskSpec, spec_hash

PACKAGES = ("bl-model", "bl-data", "bl-eval", "torch", "transformers")
REFERENCE_MODELS = ("LLaMA-VID", "Ad-LLaVA", "Behavior-LLaVA")


def resolve_tasks(tasks: Sequence[str | TaskSpec]) -> list[TaskSpec]:
    """Task names (keys of `bl_eval.tasks.TASKS`) or specs -> specs; ValueError naming every unknown name."""
    from .tasks import TASKS

    unknown = [task for task in tasks if not isinstance(task, TaskSpec) and task not in TASKS]
    if unknown:
        raise ValueError(
            f"unknown task(s) {', '.join(map(repr, unknown))}; known tasks: {', '.join(sorted(TASKS))}"
        )
    return [task if isinstance(task, TaskSpec) else TASKS[task] for task in tasks]


def _read_cache(path: Path) -> dict[str, Record]:
    """Cached records by id; a line cut short by an interrupted run is ignored (its id is recomputed)."""
    records: dict[str, Record] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[record["id"]] = record
    return records


def _claim_cache(cache_dir: Path, model_path: Path) -> None:
    """Tie `cache_dir` to one model; raise if it holds another model's predictions (a claim by a run that
    cached nothing, e.g. one given a wrong model path, passes on)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    owner = cache_dir / "model.json"
    mine = {"model": str(model_path.resolve())}
    predicted = any(path.stat().st_size for path in cache_dir.glob("*/*.jsonl"))
    if predicted and owner.exists() and json.loads(owner.read_text()) != mine:
        raise ValueError(
            f"{cache_dir} caches predictions of {owner.read_text().strip()}, not {mine}; use another out_dir"
        )
    owner.write_text(json.dumps(mine) + "\n")


def run_task(
    spec: TaskSpec,
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    data_root: Path,
    cache_dir: Path,
    *,
    limit: int | None = None,
    batch_size: int = 8,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One task -> (its results.json entry, its samples.jsonl rows); computes only uncached examples.

    Examples that failed (unreadable media, over budget) are left out of the metric and counted."""
    examples = spec.load(data_root, limit)
    cache_path = cache_dir / spec.name / f"{spec_hash(spec)}.jsonl"
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cached = _read_cache(cache_path)
    todo = [e for e in examples if e.id not in cached]
    protocol = PROTOCOLS[spec.protocol]
    with (
        cache_path.open("a", encoding="utf-8") as cache,
        progress(total=len(todo), desc=spec.name, unit="sample") as bar,
    ):
        for start in range(0, len(todo), batch_size):
            for record in protocol(model, processor, spec, todo[start : start + batch_size], batch_size):
                cached[record["id"]] = record
                cache.write(json.dumps(record, default=str) + "\n")
            cache.flush()
            bar.update(len(todo[start : start + batch_size]))
    rows = [
        {
            "task": spec.name,
            "id": e.id,
            "prediction": cached[e.id]["prediction"],
            "target": e.target,
            "raw": cached[e.id]["raw"],
        }
        | ({"error": cached[e.id]["error"]} if "error" in cached[e.id] else {})
        for e in examples
    ]
    scored = [e for e in examples if "error" not in cached[e.id]]
    field = "scores" if spec.metric in SCORE_METRICS else "prediction"  # ranking metrics take score tables
    predictions, targets = [cached[e.id][field] for e in scored], [e.target for e in scored]
    entry = {
        "metrics": METRICS[spec.metric](predictions, targets) if scored else {},
        "n": len(scored),
        "failed": len(examples) - len(scored),
        "spec_hash": spec_hash(spec),
        "protocol": spec.protocol,
        "metric": spec.metric,
        "group": spec.group,
        "cached": len(examples) - len(todo),
    }
    return entry, rows


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git_hash() -> str | None:
    """HEAD of the git checkout holding this code; None outside one (or without git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _reference(task: str) -> Mapping[str, Any]:
    """The paper's numbers for `task` by model name; empty when `bl_eval.reference` lacks them."""
    try:
        from .reference import reference_rows
    except ImportError:
        return {}
    try:
        return reference_rows(task) or {}
    except KeyError:
        return {}


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def results_markdown(results: dict[str, Any], specs: Sequence[TaskSpec]) -> str:
    """A markdown table: per task our number beside the paper's reference rows."""
    lines = [
        f"# {results['model']['path']}",
        "",
        f"| task | metric | n | ours | {' | '.join(REFERENCE_MODELS)} |",
        "|---" * (4 + len(REFERENCE_MODELS)) + "|",
    ]
    for spec in specs:
        entry = results["tasks"][spec.name]
        key = spec.paper_metric_key or spec.metric
        metrics = entry["metrics"]
        ours = metrics.get(key, metrics.get(spec.metric, next(iter(metrics.values()), None)))
        reference = _reference(spec.name)
        cells = [
            spec.name,
            key,
            str(entry["n"]),
            _cell(ours),
            *(_cell(reference.get(m)) for m in REFERENCE_MODELS),
        ]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def evaluate(
    model_path: str | Path,
    tasks: Sequence[str | TaskSpec],
    data_root: str | Path,
    out_dir: str | Path,
    *,
    processor_path: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Evaluate `model_path` on `tasks` (names or specs) with data under `data_root`; write and return results."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    specs = resolve_tasks(tasks)
    _claim_cache(out_dir / "cache", model_path)
    set_seed(seed)
    model, processor = load(model_path, processor_path, device)
    results: dict[str, Any] = {
        "model": {"path": str(model_path), "config": json.loads(model.config.to_json_string())},
        "processor": str(processor_path or model_path),
        "data_root": str(data_root),
        "limit": limit,
        "seed": seed,
        "versions": _versions(),
        "git": _git_hash(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "tasks": {},
    }
    samples = []
    for spec in specs:
        entry, rows = run_task(
            spec, model, processor, Path(data_root), out_dir / "cache", limit=limit, batch_size=batch_size
        )
        results["tasks"][spec.name] = entry
        samples += rows
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    with (out_dir / "samples.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, default=str) + "\n" for row in samples)
    (out_dir / "results.md").write_text(results_markdown(results, specs))
    return results
