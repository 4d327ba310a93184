"""ScannIndex with real ScaNN against ExactIndex: recall, files, live updates, tuning, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from recsys.index.base import IndexConfig, IndexLoadError
from recsys.index.exact import ExactIndex
from recsys.index.recall import recall_at_k
from recsys.index.registry import build_index, load_index
from recsys.index.scann_index import ScannIndex
from recsys.index.tuning import tune_scann

DIM = 32
NUM_ITEMS = 20_000
TREE = IndexConfig(kind="scann", num_leaves=100, num_leaves_to_search=5, reorder_k=100)
SMALL_TREE = IndexConfig(kind="scann", num_leaves=20, num_leaves_to_search=2, reorder_k=40)


def mixture(num_points: int, seed: int, num_clusters: int = 200, spread: float = 0.6) -> np.ndarray:
    """Unit-norm points `[num_points, DIM]` from a fixed mixture of gaussian clusters."""
    centers = np.random.default_rng(1234).standard_normal((num_clusters, DIM))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_clusters, num_points)
    points = centers[labels] + spread / np.sqrt(DIM) * rng.standard_normal((num_points, DIM))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], np.ndarray]:
    return [f"v{row}" for row in range(NUM_ITEMS)], mixture(NUM_ITEMS, seed=0)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return mixture(200, seed=1)  # held out: same mixture, not corpus rows


@pytest.fixture(scope="module")
def exact(corpus: tuple[list[str], np.ndarray]) -> ExactIndex:
    return ExactIndex.build(*corpus)


@pytest.fixture(scope="module")
def tree_index(corpus: tuple[list[str], np.ndarray]) -> ScannIndex:
    """Tree + AH + reorder, built once for this file; tests must not mutate it."""
    return ScannIndex.build(*corpus, TREE)


@pytest.fixture
def small_index(corpus: tuple[list[str], np.ndarray]) -> ScannIndex:
    """A 3000-item tree index of its own, for tests that mutate."""
    ids, embeddings = corpus
    return ScannIndex.build(ids[:3000], embeddings[:3000], SMALL_TREE)


def own_scores(ids: np.ndarray, embeddings: np.ndarray, queries: np.ndarray) -> np.ndarray:
    rows = np.char.lstrip(ids.astype(str), "v").astype(int)
    return np.einsum("qkd,qd->qk", embeddings[rows], queries)


def test_tree_recall_at_10_and_exact_scores(
    tree_index: ScannIndex,
    exact: ExactIndex,
    queries: np.ndarray,
    corpus: tuple[list[str], np.ndarray],
) -> None:
    assert tree_index.num_leaves == 100
    found = tree_index.search_batch(queries, 10)
    truth = exact.search_batch(queries, 10)
    assert found.ids.shape == (200, 10)
    assert recall_at_k(found.ids, truth.ids) >= 0.9
    # Reordering rescores in float32: scores are the returned items' own dot products.
    np.testing.assert_allclose(
        found.scores, own_scores(found.ids, corpus[1], queries), rtol=0, atol=1e-5
    )
    assert np.all(np.diff(found.scores, axis=1) <= 0)


def test_single_search_agrees_with_batch(tree_index: ScannIndex, queries: np.ndarray) -> None:
    batch = tree_index.search_batch(queries[:20], 10)
    for row, query in enumerate(queries[:20]):
        single = tree_index.search(query, 10)
        assert single.ids.tolist() == batch.ids[row].tolist()


def test_searching_every_leaf_with_deep_reorder_is_exact(
    tree_index: ScannIndex, exact: ExactIndex, queries: np.ndarray
) -> None:
    found = tree_index.search_batch(queries, 10, leaves_to_search=100, reorder_k=2000)
    truth = exact.search_batch(queries, 10)
    assert recall_at_k(found.ids, truth.ids) == 1.0
    np.testing.assert_allclose(found.scores, truth.scores, rtol=0, atol=1e-5)


def test_brute_force_config_has_recall_one(
    corpus: tuple[list[str], np.ndarray], queries: np.ndarray
) -> None:
    ids, embeddings = corpus
    index = ScannIndex.build(ids[:5000], embeddings[:5000], IndexConfig(scoring="brute_force"))
    truth = ExactIndex.build(ids[:5000], embeddings[:5000]).search_batch(queries, 10)
    found = index.search_batch(queries, 10)
    assert index.num_leaves is None
    assert recall_at_k(found.ids, truth.ids) == 1.0
    np.testing.assert_allclose(found.scores, truth.scores, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="leaves_to_search and reorder_k apply to a tree"):
        index.search(queries[0], 10, leaves_to_search=3)


def test_build_index_auto_picks_scann_at_20k(corpus: tuple[list[str], np.ndarray]) -> None:
    config = IndexConfig.for_corpus_size(NUM_ITEMS)
    assert (config.kind, config.num_leaves, config.num_leaves_to_search) == ("scann", 141, 8)
    ids, embeddings = corpus
    assert isinstance(build_index(ids[:19_999], embeddings[:19_999]), ExactIndex)  # < 20k


def test_k_larger_than_corpus_returns_every_item(small_index: ScannIndex) -> None:
    # 2 of 20 leaves hold ~300 items: the index widens the search to return all 3000.
    found = small_index.search(np.ones(DIM), 5000)
    assert found.ids.shape == (3000,)
    assert len(set(found.ids.tolist())) == 3000
    batch = small_index.search_batch(np.ones((2, DIM)), 5000)
    assert batch.ids.shape == (2, 3000)


def test_save_load_round_trip_is_identical(
    tree_index: ScannIndex, queries: np.ndarray, tmp_path: Path
) -> None:
    tree_index.save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx", expected_dim=DIM)
    assert isinstance(loaded, ScannIndex)
    assert (len(loaded), loaded.num_leaves) == (NUM_ITEMS, 100)
    assert loaded.config == tree_index.config
    before, after = tree_index.search_batch(queries, 10), loaded.search_batch(queries, 10)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.scores, before.scores)
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert manifest["embeddings_file"] == "scann/dataset.npy"  # ScaNN's copy, not a second one
    assert not list((tmp_path / "idx").rglob("*.pkl"))


def test_scann_files_load_alone_without_pickle(tree_index: ScannIndex, tmp_path: Path) -> None:
    import scann

    tree_index.save(tmp_path / "idx")
    shutil.copytree(tmp_path / "idx" / "scann", tmp_path / "only_scann")
    names = sorted(p.name for p in (tmp_path / "only_scann").iterdir())
    assert all(name.endswith((".pb", ".pbtxt", ".npy")) for name in names), names
    searcher = scann.scann_ops_pybind.load_searcher(str(tmp_path / "only_scann"))
    assert searcher.size() == NUM_ITEMS


@pytest.mark.parametrize("name", ["scann/hashed_dataset.npy", "ids.npy", "scann/scann_config.pb"])
def test_flipped_byte_fails_load_naming_the_file(
    small_index: ScannIndex, tmp_path: Path, name: str
) -> None:
    small_index.save(tmp_path / "idx")
    path = tmp_path / "idx" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(IndexLoadError, match="checksum mismatch") as caught:
        load_index(tmp_path / "idx")
    assert caught.value.path == path
    assert name.rsplit("/", maxsplit=1)[-1] in str(caught.value)


def test_planted_pickle_and_wrong_dim_fail_load(small_index: ScannIndex, tmp_path: Path) -> None:
    small_index.save(tmp_path / "idx")
    with pytest.raises(IndexLoadError, match="wrong dim: the index has dimension 32 but 64"):
        ScannIndex.load(tmp_path / "idx", expected_dim=64)
    # load_searcher would unpickle this file; load refuses before ScaNN sees the directory.
    (tmp_path / "idx" / "scann" / "scann_docids.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(IndexLoadError, match=r"scann_docids\.pkl: unexpected file"):
        ScannIndex.load(tmp_path / "idx")
    with pytest.raises(IndexLoadError, match="holds a 'scann' index, not 'exact'"):
        ExactIndex.load(tmp_path / "idx")


def test_added_item_is_found_without_rebuild(small_index: ScannIndex) -> None:
    query = mixture(1, seed=7)[0]
    near = query + 0.01
    small_index.add(["fresh"], near[None, :])
    found = small_index.search(query, 5)
    assert found.ids[0] == "fresh"
    assert found.scores[0] == pytest.approx(float(near @ query), abs=1e-5)
    assert small_index.search_batch(query[None, :], 5).ids[0, 0] == "fresh"
    assert len(small_index) == 3001


def test_removed_id_never_comes_back(
    small_index: ScannIndex, corpus: tuple[list[str], np.ndarray], tmp_path: Path
) -> None:
    query = mixture(1, seed=8)[0]
    top = small_index.search(query, 30).ids.tolist()
    removed = set(top[:20])
    small_index.remove(top[:20])  # tombstones crowd the top: the search must over-fetch
    assert len(small_index) == 2980
    ids, embeddings = corpus
    live = [row for row in range(3000) if ids[row] not in removed]
    truth = ExactIndex.build([ids[row] for row in live], embeddings[live]).search(query, 10)

    def assert_gone(index: ScannIndex) -> None:
        found = index.search(query, 10)
        assert found.ids.shape == (10,)
        assert not set(found.ids.tolist()) & removed
        # Every leaf and a deep reorder: the exact top 10 of the 2980 live items.
        deep = index.search(query, 10, leaves_to_search=20, reorder_k=3000)
        assert deep.ids.tolist() == truth.ids.tolist()
        every = index.search_batch(query[None, :], 5000).ids[0].tolist()
        assert len(every) == 2980
        assert not set(every) & removed

    assert_gone(small_index)
    small_index.save(tmp_path / "idx")
    loaded = ScannIndex.load(tmp_path / "idx")
    assert_gone(loaded)
    loaded.compact()
    assert loaded.num_pending == 0
    assert_gone(loaded)
    loaded.save(tmp_path / "idx")
    assert_gone(ScannIndex.load(tmp_path / "idx"))


def test_re_adding_replaces_and_survives_save_load_and_compact(
    small_index: ScannIndex, tmp_path: Path
) -> None:
    query = mixture(1, seed=9)[0]
    small_index.add(["v10"], query[None, :])  # v10 moves onto the query: score |q|^2 = 1
    small_index.add(["v10"], (2 * query)[None, :])  # again, in the delta: score 2
    small_index.add(["v11"], (-query)[None, :])  # v11 moves away: score -1
    assert len(small_index) == 3000  # replaced, not added

    def assert_replaced(index: ScannIndex) -> None:
        found = index.search(query, 3000)
        as_list = found.ids.tolist()
        assert as_list.count("v10") == 1
        assert as_list.count("v11") == 1
        assert as_list[0] == "v10"
        assert found.scores[0] == pytest.approx(2.0, abs=1e-5)
        assert as_list[-1] == "v11"
        assert found.scores[-1] == pytest.approx(-1.0, abs=1e-5)

    assert_replaced(small_index)
    small_index.save(tmp_path / "idx")
    loaded = ScannIndex.load(tmp_path / "idx")
    assert_replaced(loaded)
    loaded.compact()
    assert_replaced(loaded)
    small_index.remove(["v10"])
    assert "v10" not in small_index
    assert "v10" not in small_index.search(query, 3000).ids.tolist()


def test_compact_to_a_tiny_corpus_falls_back_to_brute_force(
    small_index: ScannIndex, corpus: tuple[list[str], np.ndarray]
) -> None:
    small_index.remove([f"v{row}" for row in range(10, 3000)])
    small_index.compact()  # 10 items: too few to train asymmetric hashing (16 centres)
    assert (len(small_index), small_index.num_leaves) == (10, None)
    query = mixture(1, seed=10)[0]
    truth = ExactIndex.build(corpus[0][:10], corpus[1][:10]).search(query, 3)
    found = small_index.search(query, 3, leaves_to_search=5)  # ignored without a tree
    assert found.ids.tolist() == truth.ids.tolist()


def test_compact_of_everything_removed_gives_an_empty_index(small_index: ScannIndex) -> None:
    small_index.remove([f"v{row}" for row in range(3000)])
    small_index.compact()
    assert len(small_index) == 0
    assert small_index.search(np.ones(DIM), 5).ids.shape == (0,)
    small_index.add(["only"], np.ones((1, DIM)))
    assert small_index.search(np.ones(DIM), 5).ids.tolist() == ["only"]


def test_tune_meets_target_and_is_saved(
    corpus: tuple[list[str], np.ndarray], exact: ExactIndex, tmp_path: Path
) -> None:
    ids, embeddings = corpus
    index = ScannIndex.build(ids, embeddings, TREE)
    tune_queries = mixture(100, seed=2)
    result = tune_scann(
        index,
        tune_queries,
        10,
        0.97,
        exact=exact,
        leaves_candidates=[1, 3, 10, 30],
        reorder_candidates=[10, 50, 200],
        latency_queries=20,
    )
    assert result.met_target
    assert result.recall - 2 * result.recall_stderr >= 0.97  # the default margin: 2 SE
    assert result.latency_p50_ms > 0
    chosen = (result.leaves_to_search, result.reorder_k)
    assert chosen in {(t.leaves_to_search, t.reorder_k) for t in result.trials}
    assert (index.config.num_leaves_to_search, index.config.reorder_k) == chosen
    index.save(tmp_path / "idx")
    loaded = ScannIndex.load(tmp_path / "idx")
    assert (loaded.config.num_leaves_to_search, loaded.config.reorder_k) == chosen
    truth = exact.search_batch(tune_queries, 10).ids
    assert recall_at_k(loaded.search_batch(tune_queries, 10).ids, truth) == result.recall


def test_bad_inputs_name_the_argument(tree_index: ScannIndex, queries: np.ndarray) -> None:
    query = queries[0]
    with pytest.raises(ValueError, match="k must be a positive int: got 0"):
        tree_index.search(query, 0)
    with pytest.raises(ValueError, match="k must be a positive int: got float"):
        tree_index.search_batch(queries, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"query must have shape \[32\]: got shape \(31,\)"):
        tree_index.search(query[:31], 5)
    with pytest.raises(ValueError, match=r"queries must have shape \[num_queries, 32\]"):
        tree_index.search_batch(query, 5)
    with pytest.raises(ValueError, match="leaves_to_search must be a positive int or None"):
        tree_index.search(query, 5, leaves_to_search=0)
    with pytest.raises(ValueError, match="reorder_k must be a positive int or None"):
        tree_index.search_batch(queries, 5, reorder_k=-1)
    with pytest.raises(ValueError, match="embeddings has dimension 8 but the index has dimension"):
        tree_index.add(["x"], np.ones((1, 8)))
    with pytest.raises(ValueError, match="ids to remove are not in the index: 'nope'"):
        tree_index.remove(["nope"])
    with pytest.raises(ValueError, match="ids has duplicate ids in one call: 'v1'"):
        tree_index.remove(["v1", "v1"])
    with pytest.raises(ValueError, match=r"config\.kind is 'exact'"):
        ScannIndex.build(["a"], np.ones((1, DIM)), IndexConfig(kind="exact"))
    with pytest.raises(ValueError, match="target_recall must be in"):
        tune_scann(tree_index, queries, 10, 1.5, exact=np.empty((200, 10)))
    with pytest.raises(ValueError, match="stderr_margin must be a finite number >= 0"):
        tune_scann(tree_index, queries, 10, 0.9, exact=np.empty((200, 10)), stderr_margin=-1)
    with pytest.raises(ValueError, match=r"exact must be top-k ids of shape \[200, 10\]"):
        tune_scann(tree_index, queries, 10, 0.9, exact=np.empty((200, 9)))
    assert len(tree_index) == NUM_ITEMS  # refused calls change nothing


def test_search_rows_are_positions_of_the_search_ids_through_changes(
    small_index: ScannIndex, tmp_path: Path
) -> None:
    queries = mixture(5, seed=11)

    def assert_rows_match(index: ScannIndex) -> None:
        for query in queries:
            rows, scores = index.search_rows(query, 50)
            found = index.search(query, 50)
            assert rows.dtype == np.int64
            assert index.row_ids[rows].tolist() == found.ids.tolist()
            np.testing.assert_array_equal(scores, found.scores)

    assert_rows_match(small_index)
    small_index.add(["fresh-1", "fresh-2"], queries[:2] + 0.01)  # delta rows follow main rows
    assert_rows_match(small_index)
    rows, _ = small_index.search_rows(queries[0], 1)
    assert rows[0] >= 3000
    assert small_index.row_ids[rows[0]] == "fresh-1"
    small_index.remove(["fresh-1", small_index.search(queries[1], 3).ids[2]])
    assert_rows_match(small_index)
    small_index.save(tmp_path / "idx")
    assert_rows_match(ScannIndex.load(tmp_path / "idx"))
    small_index.compact()
    assert_rows_match(small_index)


def test_exact_search_rows_are_row_positions(exact: ExactIndex, queries: np.ndarray) -> None:
    rows, scores = exact.search_rows(queries[0], 20)
    found = exact.search(queries[0], 20)
    assert exact.row_ids[rows].tolist() == found.ids.tolist()
    np.testing.assert_array_equal(scores, found.scores)
