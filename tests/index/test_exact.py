"""ExactIndex against a naive full sort, its files, config choice, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.index import top_k as top_k_module
from recsys.index.base import IndexConfig, IndexLoadError
from recsys.index.exact import ExactIndex
from recsys.index.recall import recall_at_k
from recsys.index.registry import build_index, load_index

DIM = 16


def random_items(num_items: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Ids "i0".. and unit-norm gaussian embeddings `[num_items, DIM]`."""
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((num_items, DIM)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return [f"i{row}" for row in range(num_items)], embeddings


@pytest.fixture(scope="module")
def items() -> tuple[list[str], np.ndarray]:
    return random_items(2000)


@pytest.fixture
def index(items: tuple[list[str], np.ndarray]) -> ExactIndex:
    return ExactIndex.build(*items)


def naive_top_k(queries: np.ndarray, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    scores = queries @ embeddings.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def test_matches_naive_full_sort(index: ExactIndex, items: tuple[list[str], np.ndarray]) -> None:
    ids, embeddings = items
    queries = np.random.default_rng(1).standard_normal((25, DIM)).astype(np.float32)
    found = index.search_batch(queries, 10)
    naive_rows, naive_scores = naive_top_k(queries, embeddings, 10)
    assert found.ids.shape == (25, 10)
    assert found.scores.dtype == np.float32
    np.testing.assert_allclose(found.scores, naive_scores, rtol=0, atol=1e-5)
    # Each returned id's score is its own exact dot product (ids may differ only on near-ties).
    rows = np.char.lstrip(found.ids.astype(str), "i").astype(int)
    own = np.einsum("qkd,qd->qk", embeddings[rows], queries)
    np.testing.assert_allclose(found.scores, own, rtol=0, atol=1e-5)
    assert recall_at_k(found.ids, np.asarray(ids)[naive_rows]) == 1.0  # continuous: no ties


def test_single_search_equals_batch_row(index: ExactIndex) -> None:
    query = np.random.default_rng(2).standard_normal(DIM).astype(np.float32)
    single = index.search(query, 5)
    batch = index.search_batch(query[None, :], 5)
    assert single.ids.shape == (5,)
    assert single.ids.tolist() == batch.ids[0].tolist()
    assert np.all(np.diff(single.scores) <= 0)  # best first


@pytest.mark.parametrize("block_elements", [1 << 22, 2])
def test_ties_go_to_the_earlier_row(monkeypatch: pytest.MonkeyPatch, block_elements: int) -> None:
    monkeypatch.setattr(top_k_module, "_SCORE_BLOCK_ELEMENTS", block_elements)
    embeddings = np.zeros((10, 2), dtype=np.float32)
    embeddings[:, 0] = [1, 3, 3, 1, 3, 3, 2, 3, 0, 3]
    ids = [f"r{row}" for row in range(10)]
    found = ExactIndex.build(ids, embeddings).search(np.array([1.0, 0.0]), 4)
    # Score 3 at rows 1, 2, 4, 5, 7, 9: the four lowest rows win, in row order.
    assert found.ids.tolist() == ["r1", "r2", "r4", "r5"]
    np.testing.assert_array_equal(found.scores, [3, 3, 3, 3])


def test_k_larger_than_corpus_returns_every_item(index: ExactIndex) -> None:
    found = index.search(np.ones(DIM), 10_000)
    assert found.ids.shape == (2000,)  # len(index), not k
    assert len(set(found.ids.tolist())) == 2000


def test_add_replace_and_remove(items: tuple[list[str], np.ndarray]) -> None:
    ids, embeddings = items
    index = ExactIndex.build(ids[:100], embeddings[:100])
    target = np.zeros(DIM, dtype=np.float32)
    target[0] = 10.0
    index.add(["new"], target[None, :])
    assert len(index) == 101
    assert index.search(target, 1).ids.tolist() == ["new"]
    # Re-adding i5 with the target vector replaces it: same count, i5 scores 10 * 10 = 100.
    index.add(["i5"], target[None, :])
    assert len(index) == 101
    found = index.search(target, 2)
    assert sorted(found.ids.tolist()) == ["i5", "new"]
    np.testing.assert_allclose(found.scores, [100.0, 100.0])
    index.remove(["new", "i5"])
    assert len(index) == 99
    assert "i5" not in index
    all_ids = index.search(target, 1000).ids.tolist()
    assert "i5" not in all_ids
    assert "new" not in all_ids


def test_remove_everything_leaves_an_empty_searchable_index(
    items: tuple[list[str], np.ndarray],
) -> None:
    ids, embeddings = items
    index = ExactIndex.build(ids[:3], embeddings[:3])
    index.remove(ids[:3])
    assert len(index) == 0
    assert index.search_batch(embeddings[:2], 5).ids.shape == (2, 0)


def test_save_load_round_trip(index: ExactIndex, tmp_path: Path) -> None:
    queries = np.random.default_rng(4).standard_normal((5, DIM)).astype(np.float32)
    index.save(tmp_path / "exact")
    loaded = load_index(tmp_path / "exact")
    assert isinstance(loaded, ExactIndex)
    assert len(loaded) == len(index)
    before, after = index.search_batch(queries, 10), loaded.search_batch(queries, 10)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.scores, before.scores)
    manifest = json.loads((tmp_path / "exact" / "index.json").read_text())
    assert manifest["kind"] == "exact"
    assert manifest["dim"] == DIM
    assert manifest["count"] == 2000
    assert set(manifest["files"]) == {"ids.npy", "embeddings.npy"}
    assert [p.name for p in tmp_path.iterdir()] == ["exact"]  # no temporary sibling left


def test_save_replaces_an_existing_index(index: ExactIndex, tmp_path: Path) -> None:
    small = ExactIndex.build(["a"], np.ones((1, DIM), dtype=np.float32))
    small.save(tmp_path / "idx")
    index.save(tmp_path / "idx")
    assert len(ExactIndex.load(tmp_path / "idx")) == 2000


def test_save_refuses_to_replace_a_foreign_directory(index: ExactIndex, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an index")
    with pytest.raises(ValueError, match="not an index directory"):
        index.save(tmp_path)
    assert (tmp_path / "notes.txt").exists()


def test_flipped_byte_fails_load_naming_the_file(index: ExactIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "idx")
    path = tmp_path / "idx" / "embeddings.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IndexLoadError, match=r"embeddings\.npy: checksum mismatch") as caught:
        ExactIndex.load(tmp_path / "idx")
    assert caught.value.path == path


def test_missing_and_unexpected_files_fail_load(index: ExactIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "idx")
    (tmp_path / "idx" / "ids.npy").unlink()
    with pytest.raises(IndexLoadError, match=r"ids\.npy: missing file"):
        load_index(tmp_path / "idx")
    index.save(tmp_path / "idx2")
    (tmp_path / "idx2" / "extra.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(IndexLoadError, match=r"extra\.pkl: unexpected file"):
        load_index(tmp_path / "idx2")
    with pytest.raises(IndexLoadError, match=r"index\.json: missing file"):
        load_index(tmp_path)


def test_wrong_dim_and_version_fail_load(index: ExactIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "idx")
    with pytest.raises(IndexLoadError, match=r"wrong dim: the index has dimension 16 but 8"):
        load_index(tmp_path / "idx", expected_dim=8)
    manifest_path = tmp_path / "idx" / "index.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "dim": 15}))
    # The arrays still hold 16 columns: the embeddings file is named as the one that disagrees.
    with pytest.raises(IndexLoadError, match=r"embeddings\.npy: wrong shape \[2000, 16\]"):
        load_index(tmp_path / "idx")
    manifest_path.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(IndexLoadError, match="format version 99"):
        load_index(tmp_path / "idx")


def test_config_for_corpus_size_follows_scann_advice() -> None:
    assert IndexConfig.for_corpus_size(10_000).kind == "exact"  # < 20k: brute force
    large = IndexConfig.for_corpus_size(1_000_000)
    assert large.kind == "scann"
    assert large.num_leaves == 1000  # sqrt(1e6)
    assert large.num_leaves_to_search == 50  # 5 % of 1000
    assert large.reorder_k == 250
    assert IndexConfig.for_corpus_size(16_000_000).num_leaves == 2000  # sqrt = 4000, capped
    explicit = IndexConfig(kind="scann", num_leaves=300).resolve(1_000_000)
    assert (explicit.num_leaves, explicit.num_leaves_to_search) == (300, 15)


def test_build_index_auto_picks_exact_for_small_corpora(
    items: tuple[list[str], np.ndarray],
) -> None:
    index = build_index(*items, IndexConfig())
    assert isinstance(index, ExactIndex)
    assert index.config.kind == "exact"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "faiss"}, "IndexConfig.kind must be one of"),
        ({"num_leaves": 0}, "IndexConfig.num_leaves must be a positive int"),
        ({"num_leaves": -1}, "IndexConfig.num_leaves must be a positive int"),
        ({"reorder_k": 2.5}, "IndexConfig.reorder_k must be a positive int"),
        ({"num_leaves": 10, "num_leaves_to_search": 11}, "num_leaves_to_search .11. must not"),
        ({"anisotropic_quantization_threshold": float("nan")}, "anisotropic_quantization"),
        ({"scoring": "brute_force", "num_leaves": 10}, "scoring='brute_force' has no tree"),
        ({"dims_per_block": 0}, "IndexConfig.dims_per_block"),
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndexConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_build_inputs_name_the_argument() -> None:
    good = np.ones((2, DIM), dtype=np.float32)
    with pytest.raises(ValueError, match="embeddings is empty"):
        ExactIndex.build(["a"], np.empty((0, DIM), dtype=np.float32))
    with pytest.raises(ValueError, match="ids is empty"):
        ExactIndex.build([], good)
    with pytest.raises(ValueError, match=r"embeddings must have shape \[num_items, dim\]"):
        ExactIndex.build(["a", "b"], np.ones(DIM))
    nan = good.copy()
    nan[1, 3] = np.nan
    with pytest.raises(
        ValueError, match=r"embeddings contains NaN or inf in 1 row\(s\), first at row 1"
    ):
        ExactIndex.build(["a", "b"], nan)
    with pytest.raises(ValueError, match="embeddings contains NaN or inf"):
        ExactIndex.build(["a", "b"], good * np.inf)
    with pytest.raises(ValueError, match="ids and embeddings differ in length: 3 ids for 2"):
        ExactIndex.build(["a", "b", "c"], good)
    with pytest.raises(ValueError, match="ids has duplicate ids in one call: 'a'"):
        ExactIndex.build(["a", "a"], good)
    with pytest.raises(ValueError, match="ids must be a sequence of strings, not a single str"):
        ExactIndex.build("ab", good)
    with pytest.raises(ValueError, match="ids must hold strings: got int"):
        ExactIndex.build([1, 2], good)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="embeddings must hold real numbers"):
        ExactIndex.build(["a", "b"], np.array([["x"] * DIM] * 2))


def test_bad_search_and_mutation_inputs_name_the_argument(index: ExactIndex) -> None:
    query = np.ones(DIM, dtype=np.float32)
    for bad_k in (0, -3):
        with pytest.raises(ValueError, match=f"k must be a positive int: got {bad_k}"):
            index.search(query, bad_k)
    for bad_k in (2.0, "5", True, None):
        with pytest.raises(ValueError, match="k must be a positive int: got"):
            index.search_batch(query[None, :], bad_k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"query must have shape \[16\]: got shape \(15,\)"):
        index.search(np.ones(15), 3)
    with pytest.raises(ValueError, match=r"query must have shape \[16\].*use search_batch"):
        index.search(np.ones((2, DIM)), 3)
    with pytest.raises(ValueError, match=r"queries must have shape \[num_queries, 16\]"):
        index.search_batch(np.ones((2, 15)), 3)
    with pytest.raises(ValueError, match="query contains NaN or inf"):
        index.search(query * np.nan, 3)
    with pytest.raises(
        ValueError, match="embeddings has dimension 15 but the index has dimension 16"
    ):
        index.add(["x"], np.ones((1, 15)))
    with pytest.raises(ValueError, match="ids has duplicate ids in one call: 'x'"):
        index.add(["x", "x"], np.ones((2, DIM)))
    with pytest.raises(ValueError, match="ids to remove are not in the index: 'nope'"):
        index.remove(["i1", "nope"])
    assert "i1" in index  # a refused call changes nothing


@pytest.mark.parametrize(
    ("layout", "sampled"), [("few_distinct_scores", True), ("sample_holds_the_best", False)]
)
def test_sampled_selection_matches_naive_sort(
    monkeypatch: pytest.MonkeyPatch, layout: str, sampled: bool
) -> None:
    rng = np.random.default_rng(5)
    num_items = 4000  # >= 2 * 16 * k for k = 50: the sampled threshold is tried
    embeddings = np.zeros((num_items, 2), dtype=np.float32)
    if layout == "few_distinct_scores":
        embeddings[:, 0] = rng.integers(0, 5, num_items)  # hundreds of ties at every score
    else:
        # Only the sampled rows (every 16th) score ~10, the rest ~1: the threshold (the
        # sample's 2 * 50 // 16 + 8 = 14th best) lets 14 rows through, fewer than k = 50,
        # so the full argpartition runs instead.
        embeddings[:, 0] = 1 + rng.random(num_items) * 0.1
        embeddings[::16, 0] = 10 + rng.random(num_items // 16)
    outcomes: list[bool] = []
    original = top_k_module._sampled_top_k

    def spy(scores: np.ndarray, k: int) -> np.ndarray | None:
        columns = original(scores, k)
        outcomes.append(columns is not None)
        return columns

    monkeypatch.setattr(top_k_module, "_sampled_top_k", spy)
    ids = [f"r{row}" for row in range(num_items)]
    query = np.array([1.0, 0.0], dtype=np.float32)
    found = ExactIndex.build(ids, embeddings).search(query, 50)
    naive = np.argsort(-(embeddings @ query), kind="stable")[:50]  # ties: lower row first
    assert found.ids.tolist() == [f"r{row}" for row in naive]
    assert outcomes == [sampled]
