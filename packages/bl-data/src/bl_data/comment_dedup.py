"""Near-duplicate comments of one post in memory linear in their number: TF-IDF cosine, greedy by likes.

    kept = near_duplicate_keep(texts, likes, threshold=0.7, max_candidates=10_000)  # indices, ascending

The result is the paper's rule as the dense n x n version computed it: TF-IDF fitted on the post's comments
(scikit-learn's defaults), comments visited most-liked first (ties: earlier first), one kept when its cosine
similarity to every comment kept so far is below the threshold (the same similarities up to float rounding,
so only a pair within ~1e-15 of the threshold could be judged differently). Only the `max_candidates` most-liked
comments are visited (the rest are not kept); the IDF still counts every comment, so the comments kept
among the candidates are those the uncapped rule keeps first (the greedy decides each comment from the
more-liked ones only), and a sample quotes the top five.

Exact, without the n x n matrix: candidates are visited in blocks of `block`; a pair is compared only when
it shares a feature in both comments' rare parts (prefix filtering: a comment's common features, taken most
common first, are left out while their norm stays below the threshold, so any pair at or above it shares a
rare feature of each), and the kept comments are indexed in a few chunks merged as they grow.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

_WORD = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern: words of 2+ characters
_PAIRS_PER_SLICE = 1 << 18  # pairs whose exact cosine is computed at once (bounds the temporary rows)


def near_duplicate_keep(
    texts: Sequence[str],
    likes: Sequence[int],
    threshold: float,
    max_candidates: int | None = None,
    block: int = 1024,
) -> np.ndarray:
    """Indices (ascending) of the comments kept: see the module docstring. `threshold` is in (0, 1]."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if max_candidates is not None and max_candidates < 1:
        raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
    order = np.argsort(-np.asarray(likes, dtype=np.float64), kind="stable")  # most-liked first
    candidates = order[:max_candidates]
    vectors = _tfidf(texts, candidates)
    if vectors is None:  # no comment has a word of 2+ characters: nothing is similar
        return np.sort(candidates)
    return np.sort(candidates[_greedy(vectors, threshold, block)])


def _tfidf(texts: Sequence[str], rows: np.ndarray) -> sp.csr_matrix | None:
    """(len(rows), V) l2-normalised TF-IDF rows of `texts[rows]` with the IDF of all `texts`, as scikit-learn's
    `TfidfVectorizer()` defines it (lowercase, words of 2+ characters, idf = ln((1 + n) / (1 + df)) + 1);
    None when no text has a word. Only the candidates' rows are built: memory is their size plus the
    vocabulary, and no scikit-learn import (seconds) in the filter's child process."""
    df: Counter[str] = Counter()
    for text in texts:
        df.update(set(_WORD.findall(text.lower())))
    if not df:
        return None
    columns: dict[str, int] = {}
    counts: list[int] = []
    indices: list[int] = []
    indptr = [0]
    for row in rows:
        for word, count in Counter(_WORD.findall(texts[row].lower())).items():
            indices.append(columns.setdefault(word, len(columns)))
            counts.append(count)
        indptr.append(len(indices))
    frequency = np.array([df[word] for word in columns])  # (V,) in column order
    idf = np.log((1 + len(texts)) / (1 + frequency)) + 1
    data = np.array(counts, np.float64) * idf[indices]  # (nnz,)
    vectors = sp.csr_matrix((data, indices, indptr), shape=(len(rows), len(columns)))
    norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel())  # (rows,)
    vectors.data /= np.repeat(np.where(norms > 0, norms, 1.0), np.diff(vectors.indptr))
    return vectors


def _rare_part(x: sp.csr_matrix, threshold: float) -> sp.csr_matrix:
    """`x` without each row's common features: taken most common first (by document frequency in `x`), as
    long as their norm stays below `threshold`. Rows at or above it share a feature of both rare parts."""
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))  # (nnz,)
    df = np.bincount(x.indices, minlength=x.shape[1])
    order = np.lexsort((x.indices, -df[x.indices], rows))  # per row: most common first, one global order
    squares = np.cumsum(x.data[order] ** 2)
    starts = x.indptr[:-1][rows[order]]
    before = np.where(starts > 0, squares[np.maximum(starts - 1, 0)], 0.0)
    common = np.zeros(x.nnz, bool)
    common[order] = squares - before < threshold * threshold
    rare = x.copy()
    rare.data[common] = 0.0
    rare.eliminate_zeros()
    return rare


def _similar(
    a: sp.csr_matrix, b: sp.csr_matrix, i: np.ndarray, j: np.ndarray, threshold: float
) -> np.ndarray:
    """Mask of the pairs (a[i], b[j]) whose cosine is at or above `threshold`, in slices of bounded size."""
    hits = np.zeros(len(i), bool)
    for s in range(0, len(i), _PAIRS_PER_SLICE):
        e = s + _PAIRS_PER_SLICE
        dots = np.asarray(a[i[s:e]].multiply(b[j[s:e]]).sum(axis=1)).ravel()
        hits[s:e] = dots >= threshold
    return hits


class _KeptIndex:
    """The rare parts and vectors of the comments kept so far, in chunks merged like a binary counter (each at
    most about half the one before it, so a block meets O(log n) chunks and a row is copied O(log n) times)."""

    def __init__(self) -> None:
        self.chunks: list[tuple[sp.csr_matrix, sp.csr_matrix]] = []  # (rare part, vectors) per chunk

    def add(self, rare: sp.csr_matrix, vectors: sp.csr_matrix) -> None:
        self.chunks.append((rare, vectors))
        while len(self.chunks) > 1 and self.chunks[-2][0].shape[0] <= self.chunks[-1][0].shape[0]:
            (r1, v1), (r2, v2) = self.chunks.pop(-2), self.chunks.pop()
            self.chunks.append((sp.vstack([r1, r2], format="csr"), sp.vstack([v1, v2], format="csr")))

    def matched(self, rare: sp.csr_matrix, vectors: sp.csr_matrix, threshold: float) -> np.ndarray:
        """Mask of the rows with a kept comment at or above `threshold`."""
        found = np.zeros(rare.shape[0], bool)
        for kept_rare, kept_vectors in self.chunks:
            pairs = (rare @ kept_rare.T).tocoo()  # (block, kept) sharing a rare feature
            hits = _similar(vectors, kept_vectors, pairs.row, pairs.col, threshold)
            found[pairs.row[hits]] = True
        return found


def _greedy(x: sp.csr_matrix, threshold: float, block: int) -> np.ndarray:
    """Mask of the rows of `x` (l2 rows, visiting order) kept by the greedy rule."""
    rare = _rare_part(x, threshold)
    keep = np.zeros(x.shape[0], bool)
    index = _KeptIndex()
    for s in range(0, x.shape[0], block):
        rows, rows_rare = x[s : s + block], rare[s : s + block]
        ok = ~index.matched(rows_rare, rows, threshold)
        pairs = sp.triu(rows_rare @ rows_rare.T, k=1).tocoo()  # (earlier, later) within the block
        hits = _similar(rows, rows, pairs.row, pairs.col, threshold)
        earlier = sp.csr_matrix(  # row: a later comment, its columns: the earlier ones it duplicates
            (np.ones(hits.sum(), bool), (pairs.col[hits], pairs.row[hits])), shape=(rows.shape[0],) * 2
        )
        for r in np.flatnonzero(np.diff(earlier.indptr)):  # decided in order: only kept ones count
            ok[r] = ok[r] and not ok[earlier.indices[earlier.indptr[r] : earlier.indptr[r + 1]]].any()
        keep[s : s + block] = ok
        index.add(rows_rare[ok], rows[ok])
    return keep
