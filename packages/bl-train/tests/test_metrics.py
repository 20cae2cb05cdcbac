"""The metric loggers, each read back by an independent reader: json for metrics.jsonl, TensorBoard's own
EventAccumulator for the event files, the .wandb record log parsed here with wandb's protobuf schema."""

import json
import struct

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bl_train.metrics import JsonlLogger, MetricLoggers, TensorBoardLogger, WandbLogger

TRAIN = {"loss": 2.5, "lr": 0.25, "tokens_per_s": 120.0, "elapsed_s": 3.0, "skipped": 1, "skipped_steps": 0}
SKIPPED = {**TRAIN, "loss": None, "skipped_steps": 1}  # a step no rank applied: its loss is null
EVAL = {"eval": {"likes_r2": 0.25, "replay_rmse": 12.0, "comment_ppl": None}}


def test_jsonl_writes_each_record_whole_and_resume_cuts_later_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first = JsonlLogger(path)
    for step in (1, 2, 3):
        first.log(step, {**TRAIN, "loss": float(step)})
    first.log(3, EVAL)
    first.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 1, **TRAIN, "loss": 1.0},
        {"step": 2, **TRAIN, "loss": 2.0},
        {"step": 3, **TRAIN, "loss": 3.0},
        {"step": 3, **EVAL},
    ]
    assert lines[0].startswith('{"step": 1, "loss": 1.0, "lr": 0.25, "tokens_per_s"')  # key order as logged
    resumed = JsonlLogger(path, start=2)  # the checkpoint was step 2: step 3's records go
    resumed.log(3, SKIPPED)
    resumed.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"step": 1, **TRAIN, "loss": 1.0},
        {"step": 2, **TRAIN, "loss": 2.0},
        {"step": 3, **SKIPPED},
    ]


def _tensorboard(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_gets_the_dashboard_scalars_and_resume_purges_later_steps(tmp_path):
    first = TensorBoardLogger(tmp_path)
    first.log(1, TRAIN)
    first.log(2, SKIPPED)
    first.log(2, EVAL)
    first.log(3, {**TRAIN, "loss": 9.0})
    first.close()
    assert _tensorboard(tmp_path) == {
        "train/loss": [(1, 2.5), (3, 9.0)],  # values in float32 (exact here); a null loss is left out
        "train/lr": [(1, 0.25), (2, 0.25), (3, 0.25)],
        "train/tokens_per_s": [(1, 120.0), (2, 120.0), (3, 120.0)],
        "eval/likes_r2": [(2, 0.25)],
        "eval/replay_rmse": [(2, 12.0)],
    }
    resumed = TensorBoardLogger(tmp_path, start=2)  # resumed from step 2: the killed run's step 3 is dropped
    resumed.log(3, {**TRAIN, "loss": 0.5})
    resumed.close()
    assert _tensorboard(tmp_path)["train/loss"] == [(1, 2.5), (3, 0.5)]


def _wandb_history(run_dir) -> list[dict[str, float]]:
    """The history records of an offline run's `run-*.wandb`: a LevelDB-style log (7-byte header `:W&B`,
    0xBEE1, version; 32 KiB blocks of chunks `<crc32, length, type>` + bytes; type 1 whole, 2/3/4 first /
    middle / last) of wandb `Record` protobufs."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, block = path.read_bytes(), 32768
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    pos, chunk, history = 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length, kind) == (0, 0):  # block padding
            pos += left
            continue
        chunk, pos = chunk + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record.FromString(chunk)
            if record.WhichOneof("record_type") == "history":
                items = {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
                history.append({k: v for k, v in items.items() if not k.startswith("_") or k == "_step"})
            chunk = b""
    return history


def test_wandb_offline_run_gets_the_dashboard_scalars(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="the bl-train[wandb] extra is not installed")
    monkeypatch.setenv("WANDB_SILENT", "true")
    lean = wandb.Settings(x_disable_stats=True, disable_git=True, disable_code=True, console="off")  # faster
    config = {"train": {"lr": 1e-3}}
    sink = WandbLogger("bl-test", "demo", config, mode="offline", dir=str(tmp_path), settings=lean)
    sink.log(1, TRAIN)
    sink.log(2, SKIPPED)
    sink.log(2, EVAL)
    sink.close()
    wandb.teardown()  # finish() can return before wandb's service has written the log (seen under load)
    assert _wandb_history(tmp_path) == [
        {"_step": 1, "train/loss": 2.5, "train/lr": 0.25, "train/tokens_per_s": 120.0},
        {
            "_step": 2,
            "train/lr": 0.25,
            "train/tokens_per_s": 120.0,
            "eval/likes_r2": 0.25,
            "eval/replay_rmse": 12.0,
        },
    ]


class _Sink:
    def __init__(self, name: str, seen: list, fail_close: bool = False):
        self.name, self.seen, self.fail_close = name, seen, fail_close

    def log(self, step, record):
        self.seen.append((self.name, step, dict(record)))

    def close(self):
        self.seen.append((self.name, "closed"))
        if self.fail_close:
            raise OSError(f"{self.name}: disk full")


def test_fan_out_sends_every_record_to_every_sink_and_closes_all_despite_a_failure():
    seen = []
    loggers = MetricLoggers([_Sink("a", seen, fail_close=True), _Sink("b", seen)])
    loggers.log(4, TRAIN)
    with pytest.raises(OSError, match="a: disk full"):
        loggers.close()
    assert seen == [("a", 4, TRAIN), ("b", 4, TRAIN), ("a", "closed"), ("b", "closed")]
    loggers.close()  # already closed: nothing is closed twice
    assert len(seen) == 4
