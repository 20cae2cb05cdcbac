"""The local engine's worker processes: `process_post` over a stream of posts, in order, surviving workers
that die.

    for result in process_posts(posts, StageConfig(), workers=8, captioner=None): ...

With a captioner (which holds a model, possibly on the GPU) or an ASR stage the workers decode
(`decode_post`) while this process captions and verbalises the decoded posts as they arrive, in order.

`process_post` never raises, but a worker can still die (a crash inside a native decoder, the OOM killer).
Then every post in flight is retried alone in a fresh process; the one that kills that process too becomes
its `Failure`, the others their normal results, and the run goes on with a new pool.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .records import Failure, Post
from .stages import (
    Captioner,
    Decoded,
    PostResult,
    StageConfig,
    caption_post,
    decode_post,
    exception_reason,
    finish_post,
    process_post,
)

Worker = Callable[[Post, StageConfig], Any]  # process_post or decode_post: never raise
Transcriber = Callable[[Post], str | Failure | None]  # the ASR stage's text of a post's media

DIED = "the worker process died while processing it (a crash, or killed, e.g. out of memory)"


def _executor(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _failed(post: Post, reason: str) -> PostResult:
    media = str(post.media_path) if post.media_path is not None else None
    return PostResult(post.id, media, failure=Failure(media or post.id, "media", reason, post.id))


def _collect(post: Post, future: Future) -> PostResult:
    """The future's result; an exception around the call (e.g. a result that cannot be pickled) fails the post."""
    try:
        return future.result()
    except BrokenProcessPool:
        raise
    except Exception as err:  # process_post itself never raises: this is the transport
        return _failed(post, exception_reason(err))


def _alone(post: Post, cfg: StageConfig, fn: Worker) -> PostResult | Decoded:
    """`fn` of the post in a fresh process of its own: a post that kills it gets the `DIED` failure."""
    with _executor(1) as single:
        try:
            return _collect(post, single.submit(fn, post, cfg))
        except BrokenProcessPool:
            return _failed(post, DIED)


def process_posts(
    posts: Iterable[Post],
    cfg: StageConfig,
    *,
    workers: int = 1,
    captioner: Captioner | None = None,
    transcript: Transcriber | None = None,
) -> Iterator[PostResult]:
    """`process_post` of each post, in input order: in this process with one worker, else decoding in
    `workers` spawned processes (see `map_posts`); with a captioner or a `transcript` (the ASR stage's text
    of a decoded post), captioning and verbalising here. `posts` is consumed in the calling thread only."""
    if captioner is None and transcript is None:
        if workers == 1:
            yield from (process_post(post, cfg) for post in posts)
        else:
            yield from map_posts(posts, cfg, workers, process_post)
        return
    if workers == 1:
        decoded_posts: Iterable[Decoded | PostResult] = (decode_post(post, cfg) for post in posts)
    else:
        decoded_posts = map_posts(posts, cfg, workers, decode_post)
    name = captioner.name if captioner is not None else None
    for decoded in decoded_posts:
        if isinstance(decoded, PostResult):
            yield decoded
            continue
        text = transcript(decoded.post) if transcript is not None else None
        if isinstance(text, Failure):  # the ASR stage cannot run at all
            yield PostResult(decoded.post.id, text.input, failure=text)
        else:
            yield finish_post(decoded, caption_post(decoded, captioner), name, cfg, text)


def map_posts(posts: Iterable[Post], cfg: StageConfig, workers: int, fn: Worker) -> Iterator[Any]:
    """`fn(post, cfg)` of each post in `workers` spawned processes, in input order, at most two posts per
    worker in flight; a post whose process dies is retried alone (see the module docstring)."""
    # a plain StageConfig: unpickling it imports bl_data.stages only, not the caller's modules
    cfg = StageConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(StageConfig)})
    pool = _executor(workers)
    pending: collections.deque[tuple[Post, Future]] = collections.deque()

    def head() -> Any:
        nonlocal pool
        post, future = pending[0]
        try:
            result = _collect(post, future)
        except BrokenProcessPool:
            pool.shutdown(cancel_futures=True)
            in_flight = list(pending)
            pending.clear()
            for suspect, before in in_flight:
                if before.done() and not before.cancelled() and before.exception() is None:
                    pending.append((suspect, before))  # finished before the pool broke
                    continue
                retried: Future = Future()
                retried.set_result(_alone(suspect, cfg, fn))
                pending.append((suspect, retried))
            pool = _executor(workers)
            result = pending[0][1].result()
        pending.popleft()
        return result

    try:
        for post in posts:
            pending.append((post, pool.submit(fn, post, cfg)))
            if len(pending) >= 2 * workers:
                yield head()
        while pending:
            yield head()
    finally:
        pool.shutdown(cancel_futures=True)
