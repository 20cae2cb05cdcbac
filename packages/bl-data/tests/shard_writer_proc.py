"""A shard-writing process for the kill -9 test: `python shard_writer_proc.py OUT N PER_SHARD DELAY`.

Writes samples `post.000` ... `post.{N-1}` (ids with dots, so keys are sanitised), skipping those already
done, printing each written id, then sleeping DELAY seconds: the parent kills it at a known point.
"""

import sys
import time

import numpy as np

from bl_data.shards import ShardWriter


def sample(i: int) -> tuple[str, dict, np.ndarray]:
    """Sample i: its id, its json and two 16x24 frames, all determined by i."""
    post_id = f"post.{i:03d}"
    frames = np.random.default_rng(i).integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    return post_id, {"id": post_id, "conversations": [{"from": "human", "value": f"sample {i}"}]}, frames


def main(out_dir: str, count: int, per_shard: int, delay: float) -> None:
    with ShardWriter(out_dir, per_shard) as writer:
        for i in range(count):
            post_id, meta, frames = sample(i)
            if writer.is_done(post_id):
                continue
            writer.write(post_id, meta, frames)
            print(post_id, flush=True)
            time.sleep(delay)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
