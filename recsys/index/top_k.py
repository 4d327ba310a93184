"""Exact top-k in numpy, the one selection every ranking uses: best first, ties to the lower column.

`top_k` selects from a score matrix the caller has (masked scores, oracle probabilities,
integer keys); `exact_top_k` scores queries against embeddings by dot product on the way.
Both go through the same blockwise selection, so memory stays bounded whatever the number of
columns, and both break ties the same way: the lower column (row of the embeddings) wins,
so results never depend on the partition algorithm.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Scores held at once: queries x columns of one block. 4M float32 = 16 MB whatever the width.
_SCORE_BLOCK_ELEMENTS = 1 << 22
_MAX_QUERY_CHUNK = 256
# Every 16th score estimates a threshold that about 2k + 128 scores pass; selecting among
# those is ~10x cheaper than argpartition over the whole block.
_SAMPLE_STRIDE = 16
_SAMPLE_SLACK = 8

# score_block(query_rows, columns) -> the scores of those queries at those columns [m, b].
ScoreBlock = Callable[[slice, slice], np.ndarray]


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns of each row of `scores: [m, n]` and their scores, both `[m, min(k, n)]`.

    Best first; equal scores go to the lower column. Any orderable dtype (float, int keys);
    -inf sorts last like any other value.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [num_rows, num_columns]: got shape {scores.shape}")
    num_rows, num_columns = scores.shape
    return _blockwise_top_k(
        lambda rows, columns: scores[rows, columns], num_rows, num_columns, k, scores.dtype
    )


def exact_top_k(
    queries: np.ndarray, embeddings: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows by dot product: `queries: [m, dim]`, `embeddings: [n, dim]` -> rows, scores.

    Both outputs are `[m, min(k, n)]`, best first; equal scores go to the lower row.
    Memory stays bounded: scores are computed for blocks of rows, not the whole [m, n].
    """
    return _blockwise_top_k(
        lambda rows, columns: queries[rows] @ embeddings[columns].T,
        queries.shape[0],
        embeddings.shape[0],
        k,
        np.dtype(np.float32),
    )


def _blockwise_top_k(
    score_block: ScoreBlock, num_rows: int, num_columns: int, k: int, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns and scores `[num_rows, min(k, num_columns)]` over blocks of scores."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ValueError(f"k must be an int >= 0: got {k!r}")
    k = min(int(k), num_columns)
    columns_out = np.empty((num_rows, k), dtype=np.int64)
    scores_out = np.empty((num_rows, k), dtype=dtype)
    if k == 0 or num_rows == 0:
        return columns_out, scores_out
    row_chunk = min(num_rows, _MAX_QUERY_CHUNK)
    block_columns = max(k, _SCORE_BLOCK_ELEMENTS // row_chunk)
    for row_start in range(0, num_rows, row_chunk):
        rows = slice(row_start, min(num_rows, row_start + row_chunk))
        best_columns = np.empty((rows.stop - rows.start, 0), dtype=np.int64)
        best_scores = np.empty((rows.stop - rows.start, 0), dtype=dtype)
        for start in range(0, num_columns, block_columns):
            block_scores = score_block(rows, slice(start, start + block_columns))
            columns = _block_top_k(block_scores, k)
            all_columns = np.concatenate([best_columns, columns + start], axis=1)
            all_scores = np.concatenate(
                [best_scores, np.take_along_axis(block_scores, columns, axis=1)], axis=1
            )
            order = np.lexsort((all_columns, -all_scores), axis=-1)[:, :k]
            best_columns = np.take_along_axis(all_columns, order, axis=1)
            best_scores = np.take_along_axis(all_scores, order, axis=1)
        columns_out[rows] = best_columns
        scores_out[rows] = best_scores
    return columns_out, scores_out


def _block_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Columns of the top `k` of each row of `scores: [m, b]`, ties to the lower column; [m, k]."""
    num_rows, num_cols = scores.shape
    if num_cols <= k:
        return np.broadcast_to(np.arange(num_cols), (num_rows, num_cols))
    if num_cols >= 2 * _SAMPLE_STRIDE * k:
        columns = _sampled_top_k(scores, k)
        if columns is not None:
            return columns
    columns = np.argpartition(scores, num_cols - k, axis=1)[:, num_cols - k :]
    threshold = np.take_along_axis(scores, columns, axis=1).min(axis=1)
    # argpartition picks arbitrarily among scores tied with the k-th; redo those rows so
    # that the lowest columns win and results never depend on the partition algorithm.
    tied = np.count_nonzero(scores >= threshold[:, None], axis=1) > k
    for row in np.flatnonzero(tied):
        candidates = np.flatnonzero(scores[row] >= threshold[row])
        order = np.lexsort((candidates, -scores[row, candidates]))[:k]
        columns[row] = candidates[order]
    return columns


def _sampled_top_k(scores: np.ndarray, k: int) -> np.ndarray | None:
    """Like `_block_top_k` via a threshold from a strided sample; None if too few pass it."""
    sample = scores[:, ::_SAMPLE_STRIDE]
    rank = min(sample.shape[1], 2 * k // _SAMPLE_STRIDE + _SAMPLE_SLACK)
    threshold = np.partition(sample, sample.shape[1] - rank, axis=1)[:, sample.shape[1] - rank]
    passed = scores >= threshold[:, None]
    counts = np.count_nonzero(passed, axis=1)
    # With k or more scores at or above the threshold, the top k (ties included) all pass.
    if counts.min() < k:
        return None
    rows, columns = np.nonzero(passed)
    order = np.lexsort((columns, -scores[rows, columns], rows))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return columns[order][starts[:, None] + np.arange(k)]
