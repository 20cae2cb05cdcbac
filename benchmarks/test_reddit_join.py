"""The Reddit importer's comment join: peak memory and wall time of `read_reddit`, in memory vs out of core.

A synthetic dump of POSTS submissions with a media file each (empty files: the importer only indexes names),
a tenth as many again without one, and 20-40 comments per submission (those of the posts without media too),
shuffled over the comments dump as a time-ordered dump interleaves them; `max_comments` 100. Each
implementation consumes the whole dump in a fresh interpreter: `legacy_read_reddit` (the in-memory join before
issue 20, kept in bl-data's tests/test_reddit_join.py) and today's `read_reddit` (an SQLite store in `$TMPDIR`,
here the benchmark's tmp_path). Printed: `peak_mib` (VmHWM of the process), `growth_mib` (VmHWM less the RSS
after imports), `wall_s`, `cpu_s` (user + system seconds: the steadier figure on a shared machine), the
store's size when the join is done (`store_mib`), and the ratios; both must yield the same items (a digest of
their reprs). Sizes: `BL_REDDIT_JOIN_POSTS` (default 1000; the issue's 100k posts / 3M comments:
`BL_REDDIT_JOIN_POSTS=100000`); a plain (benchmark-disabled) run smoke-tests 200.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

MAX_COMMENTS = 100
LEGACY = Path(__file__).resolve().parents[1] / "packages/bl-data/tests/test_reddit_join.py"

SCRIPT = """
import hashlib, importlib.util, json, resource, sys, tempfile, time
from pathlib import Path

def status_kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

def cpu_s():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

def store_kib():
    return sum(p.stat().st_size for p in Path(tempfile.gettempdir()).glob("bl-reddit-join-*/*")) // 1024

how, subs, comments, media, legacy = sys.argv[1], *map(Path, sys.argv[2:6])
spec = importlib.util.spec_from_file_location("legacy_reddit", legacy)  # both: the same imports
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
read = module.legacy_read_reddit if how == "in-memory" else module.read_reddit
base = status_kib("VmRSS")
start, cpu = time.perf_counter(), cpu_s()
digest, counts, store = hashlib.sha256(), {"posts": 0, "comments": 0, "failures": 0}, 0
for item in read(subs, comments, media, int(sys.argv[6])):
    digest.update(repr(item).encode())
    if type(item).__name__ == "Post":
        store = store or store_kib()  # at the first post: the join is done
        counts["posts"] += 1
        counts["comments"] += len(item.comments)
    else:
        counts["failures"] += 1
seconds, cpu, peak = time.perf_counter() - start, cpu_s() - cpu, status_kib("VmHWM")
print(json.dumps({**counts, "peak_mib": round(peak / 1024, 1), "growth_mib": round((peak - base) / 1024, 1),
                  "wall_s": round(seconds, 2), "cpu_s": round(cpu, 2), "store_mib": round(store / 1024, 1),
                  "digest": digest.hexdigest()}))
"""


def _dumps(folder: Path, posts: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """`posts` submissions with media + `posts // 10` without, and their 20-40 comments each, shuffled."""
    rng = np.random.default_rng(seed)
    media = folder / "media"
    media.mkdir(parents=True)
    total = posts + posts // 10
    with (folder / "RS_2020-01.ndjson").open("w") as subs:
        for i in range(total):
            if i < posts:
                (media / f"s{i:07d}.jpg").touch()
            subs.write(
                f'{{"id": "s{i:07d}", "title": "post {i}", "subreddit": "pics", "score": {i % 977}, '
                f'"num_comments": 30, "author": "a{i % 101}", "created_utc": {1577836800 + i}}}\n'
            )
    owners = np.repeat(np.arange(total), rng.integers(20, 41, total))  # (comments,) post index of each
    rng.shuffle(owners)
    scores = rng.integers(-20, 2000, len(owners))  # (comments,) many ties per post
    with (folder / "RC_2020-01.ndjson").open("w") as comments:
        for n, (owner, score) in enumerate(zip(owners.tolist(), scores.tolist(), strict=True)):
            comments.write(
                f'{{"id": "c{n:08d}", "link_id": "t3_s{owner:07d}", "parent_id": "t3_s{owner:07d}", '
                f'"body": "comment number {n} on this post", "score": {score}, "author": "u{n % 997}"}}\n'
            )
    return folder / "RS_2020-01.ndjson", folder / "RC_2020-01.ndjson", media


def _run(how: str, dumps: tuple[Path, Path, Path], tmp: Path) -> dict:
    env = {**os.environ, "TMPDIR": str(tmp)}
    args = [sys.executable, "-c", SCRIPT, how, *map(str, dumps), str(LEGACY), str(MAX_COMMENTS)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_reddit_comment_join_memory_and_time(benchmark, request, tmp_path: Path) -> None:
    enabled = not request.config.getoption("benchmark_disable") or request.config.getoption(
        "benchmark_enable"
    )
    posts = int(os.environ.get("BL_REDDIT_JOIN_POSTS", "1000")) if enabled else 200
    dumps = _dumps(tmp_path / "dump", posts)
    store_tmp = tmp_path / "tmp"
    store_tmp.mkdir()
    results: dict[str, dict] = {}

    def measure() -> None:
        for how in ("in-memory", "out-of-core"):
            results[how] = _run(how, dumps, store_tmp)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    before, after = results["in-memory"], results["out-of-core"]
    assert after.pop("digest") == before.pop("digest")  # the same Posts and Failures, in order
    assert after["posts"] == posts and list(store_tmp.iterdir()) == []
    comments = sum(1 for _ in dumps[1].open("rb"))
    info = {
        "posts": posts,
        "comments_in_dump": comments,
        **{how: r for how, r in results.items()},
        "peak_out_of_core_over_in_memory": round(after["peak_mib"] / before["peak_mib"], 2),
        "wall_out_of_core_over_in_memory": round(after["wall_s"] / before["wall_s"], 2),
        "cpu_out_of_core_over_in_memory": round(after["cpu_s"] / before["cpu_s"], 2),
    }
    benchmark.extra_info.update(info)
    print(f"\nreddit comment join: {info}")
