"""Replies serialised from cached per-video bytes parse to the message protobuf builds."""

from __future__ import annotations

import numpy as np

from recsys.inference.request import RecommendResult, StageTimings
from recsys.inference.served_catalog import ServedCatalog
from recsys_serving.proto import pb2
from recsys_serving.reply import ReplyEncoder, response_fields

TITLES = ["", "short", "é" * 70, "x" * 20_000]  # empty, 1-byte, 2-byte and 3-byte lengths


def to_response(result: RecommendResult) -> pb2.RecommendResponse:
    """The reference: the reply built item by item through the protobuf API."""
    reply = response_fields(result, 0.0)
    for item in result.items:
        reply.items.add(
            item_id=item.item_id,
            title=item.title,
            category=item.category,
            logit=item.logit,
            probability=item.probability,
        )
    return reply


def _catalog() -> ServedCatalog:
    ids = ["v0", "v1", "a-much-longer-video-id-0002", "v3"]
    return ServedCatalog(
        ids=np.array(ids, dtype=object),
        titles=np.array(TITLES, dtype=object),
        row_of={v: i for i, v in enumerate(ids)},
        category_rows={"music": np.array([1, 3])},
        category_code=np.array([-1, 0, -1, 0], dtype=np.int32),
        category_names=["music"],
    )


def _result(catalog: ServedCatalog, rows: list[int], logits: list[float]) -> RecommendResult:
    probabilities = np.array([0.5, 0.0, 1e-30, 0.25][: len(rows)])
    return RecommendResult(
        rows=np.array(rows, dtype=np.int64),
        logits=np.array(logits, dtype=np.float32),
        probabilities=probabilities,
        catalog=catalog,
        model_name="m",
        model_version="v0007",
        num_candidates_scored=400,
        unknown_videos=2,
        used_profile=True,
        timings=StageTimings(context_ms=0.1, query_tower_ms=0.2, index_ms=0.3, rescoring_ms=0.4),
    )


def test_encoded_replies_parse_to_the_protobuf_message() -> None:
    catalog = _catalog()
    encoder = ReplyEncoder(catalog)
    for rows, logits in [
        ([3, 2, 1, 0], [2.5, 0.0, -1.0, -3.75]),
        ([0, 3], [1e-8, -0.0]),  # again: the cached videos, other floats
        ([], []),
    ]:
        result = _result(catalog, rows, logits)
        parsed = pb2.RecommendResponse.FromString(encoder.encode(result, 0.0))
        want = to_response(result)
        assert parsed.timings.total_ms > 0
        parsed.timings.total_ms = want.timings.total_ms = 0.0
        assert parsed == want
        assert [i.item_id for i in parsed.items] == [catalog.ids[r] for r in rows]
        assert [i.title for i in parsed.items] == [TITLES[r] for r in rows]
        assert [i.category for i in parsed.items] == ["music" if r in (1, 3) else "" for r in rows]
        np.testing.assert_array_equal(
            [i.logit for i in parsed.items], np.array(logits, dtype=np.float32)
        )


def test_a_result_builds_its_items_from_the_arrays() -> None:
    result = _result(_catalog(), [1, 0], [2.0, 1.0])
    assert [(i.item_id, i.title, i.category) for i in result.items] == [
        ("v1", "short", "music"),
        ("v0", "", ""),
    ]
    assert [i.probability for i in result.items] == [0.5, 0.0]
    assert result.items is result.items  # built once


def test_videos_added_after_the_encoder_was_made_are_encoded() -> None:
    catalog = _catalog()
    encoder = ReplyEncoder(catalog)
    encoder.encode(_result(catalog, [0, 1], [2.0, 1.0]), 0.0)  # the cache holds 4 rows
    catalog.extend(["live-4", "live-5"], ["new upload", ""], ["news", "music"])
    result = _result(catalog, [5, 4, 1], [3.0, 2.0, 1.0])
    parsed = pb2.RecommendResponse.FromString(encoder.encode(result, 0.0))
    expected = to_response(result)
    parsed.timings.total_ms = expected.timings.total_ms = 0.0
    assert parsed == expected
    assert [i.item_id for i in parsed.items] == ["live-5", "live-4", "v1"]
    assert [i.category for i in parsed.items] == ["music", "news", "music"]
    assert catalog.category_rows["music"].tolist() == [1, 3, 5]
