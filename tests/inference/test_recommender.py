"""The serving library: query tower + index + exact re-scoring + softmax, checked by hand."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys.features.context import RequestContext, encode_request
from recsys.inference.query_tower import QueryTowerBatcher
from recsys.inference.recommender import Recommender
from recsys.inference.request import (
    ModelLoadError,
    RecommenderOptions,
    UnknownItemError,
    UnknownUserError,
    merge_context,
    softmax,
)

REQUEST_TIME = 1_800_000_000  # 2027-01-15: after every event of the tiny world


@pytest.fixture(scope="module")
def model(trained_artifact: Path) -> Recommender:
    return Recommender.load(trained_artifact)


def _query(model: Recommender, ctx: RequestContext) -> np.ndarray:
    """The query embedding straight from the SavedModel (not through the library's batcher)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model.path / "query_model"))
    features = encode_request(ctx, model.vocabs, model.config.features)
    out = loaded.signatures["serve_ids"](**{k: tf.constant(v) for k, v in features.items()})
    return np.asarray(out["query_embedding"].numpy()[0], dtype=np.float32)


def _item_ids(model: Recommender) -> list[str]:
    """The catalog's ids in embedding-row order, read from the artifact."""
    return [
        str(i) for i in pq.read_table(model.path / "items.parquet").column("item_id").to_pylist()
    ]


def _brute_force(
    model: Recommender, query: np.ndarray, excluded: set[str], size: int
) -> tuple[list[str], np.ndarray]:
    """Top ``size`` eligible items by exact dot product over the whole catalog."""
    ids = np.array(_item_ids(model), dtype=object)
    logits = np.asarray(model.embeddings, dtype=np.float32) @ query
    order = np.lexsort((np.arange(len(ids)), -logits))
    kept = [r for r in order if ids[r] not in excluded][:size]
    return [str(ids[r]) for r in kept], logits[kept]


def test_profile_recommendations_are_the_exact_top_k_with_softmax(model: Recommender) -> None:
    user = model.profiles.user_id_at(7) if model.profiles else ""
    result = model.recommend(RequestContext(request_time=REQUEST_TIME), user, k=10)
    assert result.used_profile
    assert (result.model_name, result.model_version) == ("tiny", model.version)
    ctx = model.profiles.context(user, REQUEST_TIME) if model.profiles else None
    assert ctx is not None
    watched = set(ctx.watch_history)  # all before REQUEST_TIME
    # C = max(4k, 100) = 100 candidates; the index is exact on 1500 items, so S is the exact
    # top 100 of the catalog without the watched videos.
    assert result.num_candidates_scored == 100
    expected_ids, expected_logits = _brute_force(model, _query(model, ctx), watched, 100)
    assert [i.item_id for i in result.items] == expected_ids[:10]
    logits = np.array([i.logit for i in result.items])
    np.testing.assert_allclose(logits, expected_logits[:10], rtol=1e-5, atol=1e-6)
    # probability_i = exp(l_i / T) / sum over the 100 of exp(l_j / T)
    expected_p = softmax(expected_logits, model.temperature)[:10]
    np.testing.assert_allclose([i.probability for i in result.items], expected_p, rtol=1e-4)
    assert 0.0 < sum(i.probability for i in result.items) < 1.0
    assert not watched & {i.item_id for i in result.items}
    assert result.timings.total_ms >= result.timings.query_tower_ms > 0


def test_probabilities_sum_to_one_when_every_scored_item_is_returned(model: Recommender) -> None:
    ctx = RequestContext(searches=["music"], country="US", request_time=REQUEST_TIME)
    # overfetch 1 and min_candidates 1: C = k, so S is exactly the returned items
    tight = model.with_options(RecommenderOptions(overfetch=1, min_candidates=1))
    result = tight.recommend(ctx, None, k=5)
    assert result.num_candidates_scored == 5
    assert sum(i.probability for i in result.items) == pytest.approx(1.0, abs=1e-6)
    # the ratio of two probabilities is exp((l_a - l_b) / T), whatever the scored set
    a, b = result.items[0], result.items[1]
    assert a.probability / b.probability == pytest.approx(
        np.exp((a.logit - b.logit) / model.temperature), rel=1e-4
    )


def test_search_settings_on_an_exact_index_are_ignored_out_loud(
    model: Recommender, caplog: pytest.LogCaptureFixture
) -> None:
    assert model.index.kind == "exact"  # the tiny world's catalog is below the ScaNN size
    ctx = RequestContext(searches=["music"], country="US", request_time=REQUEST_TIME)
    with caplog.at_level(logging.WARNING, logger="recsys.inference.recommender"):
        tuned = model.with_options(RecommenderOptions(leaves_to_search=3, reorder_k=50))
    assert "leaves_to_search / reorder_k ignored: the exact index" in caplog.text
    assert (
        tuned.recommend(ctx, None, k=5).rows.tolist()
        == model.recommend(ctx, None, k=5).rows.tolist()
    )


def test_query_embeddings_are_what_user_id_requests_score_with(model: Recommender) -> None:
    users = [model.profiles.user_id_at(i) for i in range(3)]  # type: ignore[union-attr]
    queries = model.query_embeddings(users, request_time=REQUEST_TIME)
    assert queries.shape == (3, model.embeddings.shape[1])
    for user, q in zip(users, queries, strict=True):
        result = model.recommend(
            RequestContext(request_time=REQUEST_TIME), user, k=10, exclude_watched=False
        )
        expected = np.asarray(model.embeddings, dtype=np.float32)[result.rows] @ q
        np.testing.assert_allclose(result.logits, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(queries[0], queries[1])
    with pytest.raises(UnknownUserError, match="'nobody' has no stored profile"):
        model.query_embeddings([users[0], "nobody"])
    assert model.query_embeddings([]).shape == (0, model.embeddings.shape[1])


def test_exclusions_and_category_filter(model: Recommender) -> None:
    ctx = RequestContext(searches=["music live"], country="US", request_time=REQUEST_TIME)
    first = model.recommend(ctx, None, k=20)
    drop = [first.items[0].item_id, first.items[3].item_id]
    second = model.recommend(ctx, None, k=18, exclude_ids=drop)
    assert [i.item_id for i in second.items] == [
        i.item_id for i in first.items if i.item_id not in drop
    ]
    category = first.items[0].category
    only = model.recommend(ctx, None, k=10, category=category)
    assert {i.category for i in only.items} == {category}
    expected = [i for i in model.recommend(ctx, None, k=400).items if i.category == category]
    assert [i.item_id for i in only.items] == [i.item_id for i in expected[:10]]
    nothing = model.recommend(ctx, None, k=10, category="no such category")
    assert nothing.items == ()
    assert nothing.num_candidates_scored == 0


def test_watched_videos_are_excluded_unless_asked(model: Recommender) -> None:
    ctx = RequestContext(searches=["music"], request_time=REQUEST_TIME)
    top = model.recommend(ctx, None, k=5).items[0].item_id
    with_history = RequestContext(
        watch_history=[top, "not-a-video"], searches=["music"], request_time=REQUEST_TIME
    )
    result = model.recommend(with_history, None, k=50)
    assert top not in {i.item_id for i in result.items}
    assert result.unknown_videos == 1  # "not-a-video" is skipped and counted
    kept = model.recommend(with_history, None, k=400, exclude_watched=False)
    assert top in {i.item_id for i in kept.items}
    # a watch at or after the request time has not happened yet: neither context nor excluded
    later = RequestContext(
        watch_history=[top],
        watch_times=[REQUEST_TIME],
        searches=["music"],
        request_time=REQUEST_TIME,
    )
    assert [i.item_id for i in model.recommend(later, None, k=5).items] == [
        i.item_id for i in model.recommend(ctx, None, k=5).items
    ]


def test_explicit_fields_win_over_the_profile(model: Recommender) -> None:
    assert model.profiles is not None
    user = model.profiles.user_id_at(3)
    override = RequestContext(country="JP", searches=["cooking"], request_time=REQUEST_TIME)
    merged = merge_context(model.profiles.context(user, REQUEST_TIME), override)
    assert merged.country == "JP"
    assert list(merged.searches) == ["cooking"]
    assert merged.search_times is None
    profile = model.profiles.context(user, REQUEST_TIME)
    assert profile is not None
    assert merged.watch_history == profile.watch_history
    via_user = model.recommend(override, user, k=10)
    explicit = model.recommend(merged, None, k=10)
    assert via_user.used_profile
    assert not explicit.used_profile
    assert [i.item_id for i in via_user.items] == [i.item_id for i in explicit.items]


def test_stored_profiles_recommend_what_their_contexts_recommend(model: Recommender) -> None:
    """A user_id request (profile encoded at load) equals the profile's explicit context."""
    assert model.profiles is not None
    compared = 0
    for row in range(0, len(model.profiles), 7):
        user = model.profiles.user_id_at(row)
        stored = model.profiles.context(user, REQUEST_TIME)
        assert stored is not None
        times = list(stored.watch_times or [])
        moments = [REQUEST_TIME] + ([times[len(times) // 2]] if times else [])
        for moment in moments:
            ctx = model.profiles.context(user, moment)
            assert ctx is not None
            if not (ctx.watch_history or ctx.searches):
                continue
            exclude = list(ctx.watch_history[:2])
            for kwargs in (
                {},
                {"exclude_watched": False},
                {"exclude_ids": ["not-a-video", *exclude]},
                {"category": model.catalog.category_names[row % 3]},
            ):
                fast = model.recommend(RequestContext(request_time=moment), user, 30, **kwargs)
                slow = model.recommend(ctx, None, 30, **kwargs)  # type: ignore[arg-type]
                assert fast.used_profile
                assert not slow.used_profile
                assert [i.item_id for i in fast.items] == [i.item_id for i in slow.items]
                np.testing.assert_allclose(fast.logits, slow.logits, rtol=1e-5, atol=1e-6)
                assert fast.unknown_videos == slow.unknown_videos
                assert fast.num_candidates_scored == slow.num_candidates_scored
                compared += 1
    assert compared > 40


def test_bad_requests_raise_clear_errors(model: Recommender) -> None:
    ctx = RequestContext(searches=["music"])
    for k in (0, 1001, -3):
        with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.1000"):
            model.recommend(ctx, None, k=k)
    with pytest.raises(ValueError, match="context is empty"):
        model.recommend(RequestContext(request_time=REQUEST_TIME), None, k=5)
    with pytest.raises(UnknownUserError, match="nobody"):
        model.recommend(None, "nobody", k=5)
    unknown_with_context = model.recommend(ctx, "nobody", k=5)  # the context alone is used
    assert not unknown_with_context.used_profile
    assert len(unknown_with_context.items) == 5


def test_similar_items_are_the_nearest_other_videos(model: Recommender) -> None:
    item = _item_ids(model)[42]
    similar = model.similar_items(item, k=5)
    assert item not in {s.item_id for s in similar}
    vector = np.asarray(model.embeddings[42], dtype=np.float32)
    ids, scores = _brute_force(model, vector, {item}, 5)
    assert [s.item_id for s in similar] == ids
    np.testing.assert_allclose([s.score for s in similar], scores, rtol=1e-5)
    with pytest.raises(UnknownItemError, match="not-a-video"):
        model.similar_items("not-a-video", 5)


def test_info_describes_the_served_version(model: Recommender) -> None:
    info = model.info()
    assert info.model_version == model.version
    assert info.num_items == 1500
    assert info.embedding_dim == 32
    assert info.num_profiles == 300
    assert info.index_kind == "exact"
    assert info.temperature == pytest.approx(0.05)


def test_concurrent_calls_equal_sequential_ones(model: Recommender) -> None:
    assert model.profiles is not None
    users = [model.profiles.user_id_at(i) for i in range(24)]
    ctx = RequestContext(request_time=REQUEST_TIME)
    sequential = [[i.item_id for i in model.recommend(ctx, u, k=10).items] for u in users]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda u: model.recommend(ctx, u, k=10), users))
    assert [[i.item_id for i in r.items] for r in parallel] == sequential


def test_batcher_runs_concurrent_queries_together_and_spreads_errors() -> None:
    calls: list[int] = []
    gate = threading.Event()

    def tower(features: dict[str, np.ndarray]) -> np.ndarray:
        calls.append(len(features["x"]))
        gate.wait(5)  # hold the first call so that the others queue behind it
        if (features["x"] < 0).any():
            raise RuntimeError("bad row")
        return features["x"].astype(np.float32) * 2

    batcher = QueryTowerBatcher(tower, max_batch=4)
    with ThreadPoolExecutor(7) as pool:
        futures = [pool.submit(batcher, {"x": np.array([[i]])}) for i in range(7)]
        time.sleep(0.3)
        gate.set()
        results = [f.result(timeout=5) for f in futures]
    # row i is doubled whatever batch it ran in
    assert [float(r[0]) for r in results] == [2.0 * i for i in range(7)]
    assert sum(calls) == 7
    assert len(calls) < 7
    assert max(calls) <= 4
    calls.clear()
    with pytest.raises(RuntimeError, match="bad row"):
        batcher({"x": np.array([[-1]])})
    assert float(batcher({"x": np.array([[3]])})[0]) == 6.0  # still works after an error


def test_softmax_by_hand() -> None:
    # logits 0 and ln 2 at T = 1: weights 1 and 2 -> 1/3, 2/3; at T = 0.5: 1 and 4 -> 0.2, 0.8
    np.testing.assert_allclose(softmax(np.array([0.0, np.log(2)]), 1.0), [1 / 3, 2 / 3])
    np.testing.assert_allclose(softmax(np.array([0.0, np.log(2)]), 0.5), [0.2, 0.8])
    assert softmax(np.array([1000.0, 0.0]), 0.01)[0] == 1.0  # no overflow
    assert softmax(np.array([]), 0.05).size == 0


def test_a_corrupt_version_is_refused(trained_artifact: Path, tmp_path: Path) -> None:
    copy = tmp_path / "v0001"
    shutil.copytree(trained_artifact, copy)
    target = copy / "item_embeddings.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"item_embeddings\.npy: sha256 does not match"):
        Recommender.load(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(ModelLoadError, match=r"manifest\.json: missing"):
        Recommender.load(copy)


def test_the_served_query_signature_is_the_exported_one() -> None:
    import recsys.inference.query_tower as served_tower
    from recsys.model.signatures import QUERY_IDS_SIGNATURE

    assert served_tower.QUERY_IDS_SIGNATURE == QUERY_IDS_SIGNATURE


def test_membership_in_a_sorted_pool_equals_isin() -> None:
    from recsys.inference.served_catalog import in_sorted

    rng = np.random.default_rng(3)
    for size in (0, 1, 5, 300):
        pool = np.unique(rng.integers(0, 1000, size))
        values = rng.integers(-5, 1005, 400)
        np.testing.assert_array_equal(in_sorted(values, pool), np.isin(values, pool))


@pytest.mark.parametrize("moment_offset", [0, 30, 86_400 * 400])
def test_live_events_on_the_encoded_profile_equal_the_merged_context(
    trained_artifact: Path, moment_offset: int
) -> None:
    """The fast path (live events appended to the profile encoded at load) against the merge
    of the raw profiles encoded as a request's context, for known and unknown users."""
    from recsys.live.events import Demographics
    from recsys.live.profiles import LiveProfile, merge_profile

    model = Recommender.load(trained_artifact)
    assert model.profiles is not None
    ids = [str(v) for v in model.catalog.ids[:6]]
    start = 1_790_000_000  # after every stored event
    lives = [
        LiveProfile(watches=((start, ids[0]), (start + 10, ids[1]))),
        LiveProfile(
            watches=((start, ids[2]), (start + 5, "never-seen-video")),
            searches=((start + 1, "music live"), (start + 20, "zzz unknownword")),
            demographics=Demographics("x", country="DE", age=44),
        ),
        LiveProfile(searches=((start + 3, "guitar lesson"),)),
    ]
    moment = start + moment_offset
    users = [model.profiles.user_id_at(i) for i in (0, 7, 19)] + ["not-in-the-artifact"]
    encoded = model._encoded_profiles
    assert encoded is not None
    for user in users:
        for live in lives:
            row = model.profiles.row_of(user)
            assert encoded.follows(row, encoded.encode_live(live, model.catalog.rows_or_missing))
            fast = model.recommend(RequestContext(request_time=moment), user, 30, live=live)
            merged = merge_profile(model.profiles.context(user), live)
            merged.request_time = moment
            slow = model.recommend(merged, None, 30)
            assert fast.live_events == live.num_events
            assert np.array_equal(fast.rows, slow.rows), (user, live)
            np.testing.assert_allclose(fast.logits, slow.logits, rtol=1e-5, atol=1e-6)
            assert fast.unknown_videos == slow.unknown_videos


def test_live_events_older_than_the_stored_profile_are_merged_without_duplicates(
    trained_artifact: Path,
) -> None:
    from recsys.live.profiles import LiveProfile

    model = Recommender.load(trained_artifact)
    assert model.profiles is not None
    user = model.profiles.user_id_at(3)
    stored = model.profiles.context(user)
    assert stored is not None
    assert stored.watch_times
    last = (int(stored.watch_times[-1]), str(stored.watch_history[-1]))
    extra = (last[0] + 1, str(model.catalog.ids[5]))
    moment = last[0] + 100
    # The stored profile's last watch sent again (a replay), and one new watch after it.
    live = LiveProfile(watches=(last, extra))
    encoded = model._encoded_profiles
    assert encoded is not None
    row = model.profiles.row_of(user)
    assert not encoded.follows(row, encoded.encode_live(live, model.catalog.rows_or_missing))
    got = model.recommend(RequestContext(request_time=moment), user, 20, live=live)
    expected = model.recommend(
        RequestContext(
            watch_history=[*stored.watch_history, extra[1]],
            watch_times=[*stored.watch_times, extra[0]],
            searches=stored.searches,
            search_times=stored.search_times,
            country=stored.country,
            region=stored.region,
            age=stored.age,
            gender=stored.gender,
            request_time=moment,
        ),
        None,
        20,
    )
    assert np.array_equal(got.rows, expected.rows)
    assert got.unknown_videos == expected.unknown_videos
