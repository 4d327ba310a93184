"""Vocabulary lookups: the small-input dict path gives the ids of the pandas path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.features.vocab import _SMALL_LOOKUP, Vocabulary

VALUES = ["a", "b", "café", "x y"]


def _pandas_path(vocab: Vocabulary, values: list[object]) -> np.ndarray:
    """The large-input path, forced by passing an object array instead of a list."""
    return vocab.lookup(np.array(values, dtype=object))


@pytest.mark.parametrize(
    "values",
    [
        ["a", None, "", "unknown", "café", float("nan"), np.str_("b"), np.float32("nan")],
        ["x y", pd.NA, "A", " a"],
        [],
        [5, "5"],
    ],
)
def test_small_lookups_equal_the_pandas_path(values: list[object]) -> None:
    vocab = Vocabulary("t", VALUES)
    got = vocab.lookup(values)
    want = _pandas_path(vocab, values)
    assert got.dtype == want.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_ids_are_reserved_first_then_in_vocabulary_order() -> None:
    vocab = Vocabulary("t", VALUES)
    np.testing.assert_array_equal(vocab.lookup(["a", "x y", None, "zz"]), [2, 5, 0, 1])
    long = ["b"] * (_SMALL_LOOKUP + 1)  # the pandas path
    np.testing.assert_array_equal(vocab.lookup(long), [3] * len(long))
    np.testing.assert_array_equal(vocab.lookup(tuple(long[:3])), [3, 3, 3])


def test_vocabularies_compare_by_values_not_by_lookup_cache() -> None:
    used, fresh = Vocabulary("t", VALUES), Vocabulary("t", VALUES)
    used.lookup(["a"])  # builds the dict cache
    assert used.values == fresh.values
    assert used.lookup(["b"]).tolist() == fresh.lookup(pd.Series(["b"])).tolist()
