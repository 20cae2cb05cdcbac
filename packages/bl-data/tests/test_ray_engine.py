"""The Ray Data engine against the local one: same samples byte for byte, failures reported, faults survived.

The module starts one two-node Ray cluster on this machine (`ray start --head` with 1 CPU and one declared GPU
for the caption actor, and a second `ray start --address` raylet with 1 CPU), so every test runs across two
nodes; the last one SIGKILLs the second node's raylet mid-run. Fault injection runs in Ray workers through `RayConfig.on_stage`; this module is pickled by value
so they can run its functions.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # as bl_data.engines.ray: workers run this Python
# the module's loopback cluster runs without Ray's token authentication, in its nodes and in the drivers it starts
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ray = pytest.importorskip("ray")

import cloudpickle  # noqa: E402  (ray's dependency)

from bl_data.asr import AsrSpec  # noqa: E402
from bl_data.captioner import VlmCaptioner  # noqa: E402
from bl_data.demo import synthesize_youtube  # noqa: E402
from bl_data.engines.ray import RayConfig, prepare_ray  # noqa: E402
from bl_data.pipeline import PrepareConfig, prepare  # noqa: E402
from bl_data.testing import save_tiny_llava  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])
APPS = Path(__file__).parents[3] / "apps"

# `bl-asr serve`'s command line and protocol; one transcript per file naming it
STUB_ASR = """
import argparse, json, os, sys
p = argparse.ArgumentParser()
p.add_argument("mode", choices=["serve"]); p.add_argument("--model")
a = p.parse_args()
print(json.dumps({"ready": True, "model": a.model}), flush=True)
for line in sys.stdin:
    path = line.rstrip("\\n")
    name = os.path.basename(path)
    print(json.dumps({"path": path, "language": "en", "duration": 1.0, "model": a.model,
                      "segments": [{"start": 0.1, "end": 0.9, "text": " hello " + name, "words": []}]}), flush=True)
"""


# the `ray` command that starts the nodes (BL_TEST_RAY_CLI: e.g. a wrapper that runs it under `nice`)
RAY_CLI = os.environ.get("BL_TEST_RAY_CLI", str(Path(sys.executable).parent / "ray"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RAY_CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """Two Ray nodes on this machine, started as on a real cluster: a head (1 CPU and the caption actor's
    declared GPU) and a second raylet (1 CPU, its node manager on `worker_port`). A start that times out on a
    loaded machine is tried again; everything is stopped at the end."""
    port, worker_port = _free_port(), _free_port()
    common = ["--include-dashboard=false", "--disable-usage-stats"]
    for _ in range(3):
        head = _ray_cli("start", "--head", f"--port={port}", "--num-cpus=1", "--num-gpus=1", *common)
        if head.returncode == 0:
            break
        _ray_cli("stop", "--force")
    else:
        pytest.fail(f"ray start --head failed 3 times: {head.stderr[-2000:]}")
    address = f"127.0.0.1:{port}"
    try:
        for _ in range(3):
            worker = _ray_cli(
                "start", f"--address={address}", "--num-cpus=1", f"--node-manager-port={worker_port}"
            )
            if worker.returncode == 0:
                break
        else:
            pytest.fail(f"the second ray start failed 3 times: {worker.stderr[-2000:]}")
        ray.init(address=address, log_to_driver=False)
        yield {"address": address, "worker_port": worker_port}
    finally:
        ray.shutdown()
        _ray_cli("stop", "--force")


def _folder(tmp_path: Path, n: int = 4) -> Path:
    """`n` good clips, a corrupt mp4 with its info.json and an info.json that is not JSON."""
    folder = synthesize_youtube(tmp_path / "dl", n, seed=5)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    info = json.loads((folder / "demo050000.info.json").read_text()) | {"id": "broken"}
    (folder / "broken.info.json").write_text(json.dumps(info))
    (folder / "notjson.info.json").write_text("{not json")
    return folder


def _members(out: Path) -> dict[str, bytes]:
    """Every member of every shard in `out`: name -> bytes (a duplicate name fails)."""
    members: dict[str, bytes] = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar:
                assert info.name not in members, f"{info.name} written twice"
                members[info.name] = tar.extractfile(info).read()
    return members


def _failures(out: Path) -> set[tuple[str, str]]:
    lines = (out / "failures.jsonl").read_text().splitlines()
    return {(Path(f["input"]).name, f["stage"]) for f in map(json.loads, lines)}


def _cfg(folder: Path, out: Path, **kw) -> PrepareConfig:
    return PrepareConfig(
        source="youtube", input=folder, out=out, max_side=64, **{"samples_per_shard": 2, **kw}
    )


def _dropped_posts(folder: Path) -> None:
    """A copy of a clip (dropped by media dedup, on the driver) and a clip with 500 views (dropped by the
    per-post min_views rule, in a Ray decode task; never decoded: its bytes differ by one appended byte)."""
    clip = (folder / "demo050001.mp4").read_bytes()
    info = json.loads((folder / "demo050001.info.json").read_text())
    few_views = {"view_count": 500, "like_count": 5}
    for name, data, extra in (("zcopy", clip, {}), ("fewviews", clip + b"\0", few_views)):
        (folder / f"{name}.mp4").write_bytes(data)
        (folder / f"{name}.info.json").write_text(json.dumps(info | {"id": name, **extra}))


def test_same_samples_as_the_local_engine_with_captions_and_asr(tmp_path, llama_tokenizer_dir):
    folder = _folder(tmp_path)
    _dropped_posts(folder)
    llava = save_tiny_llava(tmp_path / "llava", llama_tokenizer_dir)
    (tmp_path / "asr.py").write_text(STUB_ASR)
    asr = AsrSpec(model="stub", command=(sys.executable, str(tmp_path / "asr.py")))
    factory = functools.partial(VlmCaptioner, llava, device="cpu", max_new_tokens=4)
    rcfg = RayConfig(caption_batch=2, asr_batch=2, spool_page=3)
    ray_report = prepare_ray(_cfg(folder, tmp_path / "ray", asr=asr), rcfg, captioner=factory)
    local_cfg = _cfg(folder, tmp_path / "local", workers=2, asr=asr)  # decode in workers, caption here
    local_report = prepare(local_cfg, factory())

    ray_members, local_members = _members(tmp_path / "ray"), _members(tmp_path / "local")
    keys = {name.split(".")[0] for name in ray_members}
    assert keys == {f"demo05{i:04d}" for i in range(4)}
    assert ray_members == local_members  # every sample JSON and frame byte for byte
    meta = json.loads(ray_members["demo050001.json"])
    assert meta["provenance"]["captioner"] == factory().name
    assert "hello demo050001.mp4" in meta["conversations"][0]["value"]
    for key in ("media", "stages", "filters"):
        assert ray_report[key] == local_report[key], key
    assert (
        _failures(tmp_path / "ray")
        == _failures(tmp_path / "local")
        >= {
            ("broken.mp4", "media"),
            ("notjson.info.json", "import"),
        }
    )
    assert ray_report["media"]["written"] == 4 and ray_report["media"]["failed"] == {"media": 1}
    assert ray_report["media"]["dropped"] == {"duplicate_media": 1, "min_views": 1}
    assert ray_report["filters"]["posts_dropped"] == {"duplicate_media": 1, "min_views": 1}
    for report in (ray_report, local_report):  # each model loaded once per actor for the whole run
        actors = report["actors"]
        assert actors["caption"]["model_loads"] == actors["caption"]["workers"] == 1
        assert actors["asr"]["model_loads"] == actors["asr"]["workers"] == 1
        assert actors["caption"]["posts"] == 4
    assert ray_report["actors"]["asr"]["posts"] == 4  # the decoded videos (locally ASR starts before decode)


def _kill_once(marker: Path, stage: str, nth: int):
    """A stage hook that SIGKILLs its worker at the `nth` call of `stage` (counted across workers), once."""

    def hook(name: str, post_id: str) -> None:
        if name != stage or marker.exists():
            return
        calls = marker.with_suffix(".calls")
        with calls.open("a") as f:
            f.write(post_id + "\n")
        if len(calls.read_text().splitlines()) >= nth:
            marker.write_text(post_id)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


@pytest.mark.parametrize(("stage", "nth"), [("decode", 2), ("write", 3)])
def test_a_killed_worker_is_retried_with_nothing_lost_or_duplicated(tmp_path, stage, nth):
    folder = _folder(tmp_path, n=5)
    marker = tmp_path / f"killed-{stage}"
    out = tmp_path / "out"
    report = prepare_ray(_cfg(folder, out), RayConfig(on_stage=_kill_once(marker, stage, nth)))
    assert marker.exists()  # a worker was killed
    keys = {name.split(".")[0] for name in _members(out)}  # no member twice
    assert keys == {f"demo05{i:04d}" for i in range(5)}
    assert report["stages"]["written"] == 5 and report["folder"]["samples"] == 5
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def _poison(post_id: str):
    """A stage hook that SIGKILLs every worker that decodes `post_id`."""

    def hook(name: str, current: str) -> None:
        if name == "decode" and current == post_id:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def test_a_post_that_kills_every_worker_fails_alone(tmp_path):
    folder = _folder(tmp_path, n=4)
    out = tmp_path / "out"
    rcfg = RayConfig(max_retries=1, on_stage=_poison("demo050002"))
    report = prepare_ray(_cfg(folder, out), rcfg)
    assert {name.split(".")[0] for name in _members(out)} == {"demo050000", "demo050001", "demo050003"}
    assert ("demo050002.mp4", "ray") in _failures(out)
    assert report["media"]["failed"] == {"media": 1, "ray": 1} and report["media"]["written"] == 3
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_posts_lost_with_their_write_task_are_counted_by_the_rules_as_the_local_engine_does(tmp_path):
    """A write task that dies past its retries loses every post of its batch, those the per-post rules
    dropped too: each is accounted as its drop (as the local engine), only a kept one as a `ray` failure."""
    folder = _folder(tmp_path, n=2)
    _dropped_posts(folder)  # `fewviews`: dropped by min_views in its decode task, then lost with the batch

    def poison(name: str, current: str) -> None:  # every write task holding demo050000 dies
        if name == "write" and current == "demo050000":
            os.kill(os.getpid(), signal.SIGKILL)

    rcfg = RayConfig(max_retries=0, on_stage=poison)
    report = prepare_ray(_cfg(folder, tmp_path / "ray", samples_per_shard=64), rcfg)  # one write task
    local = prepare(_cfg(folder, tmp_path / "local", samples_per_shard=64))
    assert not _members(tmp_path / "ray") and report["media"]["written"] == 0
    assert report["filters"] == local["filters"]
    assert report["media"]["dropped"] == local["media"]["dropped"] == {"duplicate_media": 1, "min_views": 1}
    assert report["media"]["failed"] == {"ray": 3}  # demo050000, demo050001 and broken.mp4


def test_a_killed_driver_resumes_without_redoing_completed_shards(tmp_path):
    folder = synthesize_youtube(tmp_path / "dl", 6, seed=6)
    out = tmp_path / "out"
    address = ray.get_runtime_context().gcs_address
    argv = [
        sys.executable,
        str(APPS / "prepare"),
        "--engine",
        "ray",
        "--ray-address",
        address,
        "--source",
        "youtube",
        "--input",
        str(folder),
        "--out",
        str(out),
        "--samples-per-shard",
        "1",
    ]
    driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob("*.manifest.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    first = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    assert first, "the driver was killed before it completed a shard"
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["stages"].get("already_done", 0) >= len(first)
    assert report["stages"]["written"] + report["stages"]["already_done"] == 6
    assert {name: (out / name).read_bytes() for name in first} == first  # completed shards kept as they were
    keys = {name.split(".")[0] for name in _members(out)}
    assert len(keys) == 6 and report["folder"]["samples"] == 6
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def _straggle_until_the_others_are_written(post_id: str, out: Path, others: int, verdict: Path):
    """A stage hook: the decode of `post_id` waits (up to 120 s) until `others` samples are in completed
    shards, and records whether they got there while it was still decoding."""

    def hook(name: str, current: str) -> None:
        if name != "decode" or current != post_id or verdict.exists():
            return
        from bl_data.shards import done_keys

        deadline = time.monotonic() + 120
        while len(done_keys(out)) < others and time.monotonic() < deadline:
            time.sleep(0.1)
        verdict.write_text(str(len(done_keys(out))))

    return hook


def test_a_straggler_delays_only_itself(tmp_path):
    """With no barrier, every other post is decoded, verbalised and written while one post is still decoding."""
    folder = synthesize_youtube(tmp_path / "dl", 6, seed=9)
    out, verdict = tmp_path / "out", tmp_path / "verdict"
    hook = _straggle_until_the_others_are_written("demo090000", out, 5, verdict)
    report = prepare_ray(_cfg(folder, out, samples_per_shard=1), RayConfig(spool_page=2, on_stage=hook))
    assert verdict.read_text() == "5"  # the first post in the input was the last one written
    assert report["stages"]["written"] == 6 and len(_members(out)) > 0


def _raylet_pid(node_manager_port: int) -> int:
    """The pid of the raylet serving `node_manager_port` (the second node, which this module started)."""
    flag = f"--node_manager_port={node_manager_port}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # exited meanwhile
            continue
        if cmdline and Path(cmdline[0].decode()).name == "raylet" and flag in cmdline:
            return int(proc.name)
    raise AssertionError(f"no raylet with {flag.decode()}")


def test_a_node_lost_mid_run_loses_and_duplicates_nothing(tmp_path, ray_cluster):
    """The driver runs apps/prepare against the cluster's address; the second node's raylet is SIGKILLed
    once the first shard is complete: its tasks are retried on the head and the run finishes there."""
    folder = synthesize_youtube(tmp_path / "dl", 8, seed=8)
    out = tmp_path / "out"
    argv = [
        sys.executable,
        str(APPS / "prepare"),
        "--engine",
        "ray",
        "--ray-address",
        ray_cluster["address"],
        "--source",
        "youtube",
        "--input",
        str(folder),
        "--out",
        str(out),
        "--samples-per-shard",
        "2",
    ]
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("*.manifest.jsonl")) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    from bl_data.shards import done_keys

    assert driver.poll() is None and len(done_keys(out)) < 8  # mid-run
    os.kill(_raylet_pid(ray_cluster["worker_port"]), signal.SIGKILL)
    _, stderr = driver.communicate(timeout=600)
    assert driver.returncode == 0, stderr[-3000:]
    deadline = time.monotonic() + 120  # the GCS declares a node dead after its health checks fail (~15-30 s)
    while len([n for n in ray.nodes() if n["Alive"]]) > 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 1  # the node really went away
    report = json.loads((out / "report.json").read_text())
    keys = {name.split(".")[0] for name in _members(out)}  # no member twice
    assert keys == {f"demo08{i:04d}" for i in range(8)}
    assert report["stages"]["written"] == 8 and report["media"]["failed"] == {}
    assert not (out / "failures.jsonl").read_text()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
