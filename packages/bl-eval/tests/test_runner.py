"""`evaluate` end to end on the tiny demo checkpoint with a toy task: outputs, resume from the cache."""

from __future__ import annotations

import json
import operator
from pathlib import Path

import pytest

from bl_eval import protocols, runner
from bl_eval.metrics import METRICS
from bl_eval.spec import Example, TaskSpec, spec_hash
from bl_model import BehaviorLlavaProcessor, inference

COLOURS = ["red", "green", "blue", "yellow"]


@pytest.fixture
def model_dir(demo: Path, tmp_path: Path) -> Path:
    """The demo model with its processor files beside the weights, as bl-train's export lays it out."""
    model = tmp_path / "ckpt"
    model.mkdir()
    for f in [*(demo / "model").iterdir(), *(demo / "processor").iterdir()]:
        if not (model / f.name).exists():  # both hold the remote code's configuration.py
            (model / f.name).symlink_to(f)
    return model


def _load_shapes(root: Path):
    for entry in json.loads((root / "instructions.json").read_text())[:3]:
        colour = entry["conversations"][1]["value"].split()[4]
        yield Example(
            entry["id"],
            "<image>\nWhat colour is the object?",
            colour,
            [root / entry["image"]],
            choices=COLOURS,
        )


def _load_shapes_multilabel(root: Path):
    for example in _load_shapes(root):
        example.target = [example.target]
        yield example


TOY_MAP = TaskSpec(
    "toy_shapes_map",
    "toy",
    "logprob",
    "mean_average_precision",
    loader=_load_shapes_multilabel,
    layout="instructions.json + images/ (bl-train's demo)",
    subdir="",
)
TOY = TaskSpec(
    "toy_shapes",
    "toy",
    "logprob",
    "toy_accuracy",
    loader=_load_shapes,
    layout="instructions.json + images/ (bl-train's demo)",
    subdir="",
)


@pytest.fixture(autouse=True)
def toy_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fraction-correct metric the test owns, so the numbers below do not depend on `bl_eval.metrics`."""
    accuracy = lambda p, t: {"toy_accuracy": sum(map(operator.eq, p, t)) / len(t)}  # noqa: E731
    monkeypatch.setitem(METRICS, "toy_accuracy", accuracy)


def test_evaluate_writes_outputs_and_resumes(demo, model_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = runner.evaluate(model_dir, [TOY, TOY_MAP], demo, out, batch_size=2)
    entry = first["tasks"]["toy_shapes"]
    assert first["tasks"]["toy_shapes_map"]["metrics"]["n"] == 3  # mAP got the {label: score} tables
    assert 0 <= first["tasks"]["toy_shapes_map"]["metrics"]["map"] <= 100
    assert entry["n"] == 3 and entry["failed"] == 0 and entry["cached"] == 0
    assert entry["spec_hash"] == spec_hash(TOY) and entry["protocol"] == "logprob"
    assert 0 <= entry["metrics"]["toy_accuracy"] <= 1

    saved = json.loads((out / "results.json").read_text())
    assert saved["tasks"] == first["tasks"]
    assert saved["model"]["path"] == str(model_dir) and saved["model"]["config"]["model_type"]
    assert set(saved["versions"]) == set(runner.PACKAGES) and saved["versions"]["torch"]
    assert saved["git"] is None or len(saved["git"]) == 40
    assert saved["date"] and saved["seed"] == 0

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [(s["task"], s["id"]) for s in samples[:4]] == [
        ("toy_shapes", "shape000"),
        ("toy_shapes", "shape001"),
        ("toy_shapes", "shape002"),
        ("toy_shapes_map", "shape000"),
    ]
    assert [s["target"] for s in samples[:3]] == ["red", "green", "blue"]
    assert len(samples) == 6 and all(s["prediction"] in COLOURS and s["raw"] is None for s in samples)
    table = (out / "results.md").read_text()
    assert "| toy_shapes | toy_accuracy | 3 |" in table and "LLaMA-VID" in table and "—" in table

    cache = out / "cache" / "toy_shapes" / f"{spec_hash(TOY)}.jsonl"
    assert len(cache.read_text().splitlines()) == 3

    # Rerun: every id is cached, the protocol must not run.
    def refuse(model, processor, spec, examples, batch_size):
        raise AssertionError(f"protocol called for cached ids {[e.id for e in examples]}")

    monkeypatch.setitem(protocols.PROTOCOLS, "logprob", refuse)
    monkeypatch.setattr(runner, "PROTOCOLS", protocols.PROTOCOLS)
    second = runner.evaluate(model_dir, [TOY, TOY_MAP], demo, out, batch_size=2)
    assert second["tasks"]["toy_shapes"]["cached"] == second["tasks"]["toy_shapes_map"]["cached"] == 3
    assert second["tasks"] == first["tasks"] | {
        name: first["tasks"][name] | {"cached": 3} for name in first["tasks"]
    }

    # An interrupted run (last line lost, a half-written line): only that id is computed again.
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:2]) + '\n{"id": "shape0')
    called: list[str] = []

    def spy(model, processor, spec, examples, batch_size):
        called.extend(e.id for e in examples)
        return protocols.logprob(model, processor, spec, examples, batch_size)

    monkeypatch.setitem(protocols.PROTOCOLS, "logprob", spy)
    third = runner.evaluate(model_dir, [TOY], demo, out, batch_size=2)
    assert called == ["shape002"] and third["tasks"]["toy_shapes"]["metrics"] == entry["metrics"]


def test_cache_belongs_to_one_model(demo, model_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError):  # a wrong model path: nothing is cached, the claim passes on
        runner.evaluate(tmp_path / "wrong_model", [TOY], demo, out)
    runner._claim_cache(out / "cache", model_dir)
    (out / "cache" / "toy_shapes").mkdir()
    (out / "cache" / "toy_shapes" / "0.jsonl").write_text('{"id": "shape000"}\n')
    with pytest.raises(ValueError, match="use another out_dir"):
        runner.evaluate(tmp_path / "other_model", [TOY], demo, out)


def test_missing_processor_and_unknown_task_are_clear_errors(demo, tmp_path):
    with pytest.raises(FileNotFoundError, match="--processor"):
        inference.load(demo / "model")
    mismatched = tmp_path / "processor"
    BehaviorLlavaProcessor.from_pretrained(demo / "processor", qformer_max_length=5).save_pretrained(
        mismatched
    )
    with pytest.raises(
        ValueError, match=r"does not match the model config \(qformer_max_length: processor 5"
    ):
        inference.load(demo / "model", mismatched)
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        runner.evaluate(
            demo / "model", [TOY], tmp_path / "nowhere", tmp_path / "out", processor_path=demo / "processor"
        )


def test_behaviour_tasks_run_on_heldout_shards(demo, model_dir, tmp_path):
    """The registered behaviour tasks end to end: frames from the shards, perplexity via the nll protocol."""
    data_root = tmp_path / "data"
    data_root.mkdir()
    (data_root / "blift_heldout").symlink_to(demo / "heldout")
    tasks = ["blift_comment_ppl", "blift_likes_r2", "blift_replay_rmse"]
    results = runner.evaluate(model_dir, tasks, data_root, tmp_path / "out", limit=2, batch_size=2)
    ppl = results["tasks"]["blift_comment_ppl"]
    assert ppl["n"] == 2 and ppl["failed"] == 0
    # an untrained model's perplexity on the comments is of the order of its vocabulary size
    vocab = json.loads((demo / "model" / "config.json").read_text())["text_config"]["vocab_size"]
    assert 50 < ppl["metrics"]["perplexity"] < 20 * vocab
    for task in tasks[1:]:
        assert results["tasks"][task]["n"] == 2
