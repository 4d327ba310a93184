"""A report built on the tiny world: every section present, numbers identical to metrics.json."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsys.artifact.versions import read_manifest
from recsys.evaluation.artifact_model import remap_query_ids
from recsys.evaluation.embeddings import neighbourhood_overlap, pca_2d
from recsys.evaluation.report import fmt
from recsys.examples.building import ExampleSet
from recsys.features.vocab import Vocabularies, Vocabulary


@pytest.fixture(scope="module")
def evaluated(
    trained_artifact: Path, tiny_world: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """One evaluation of the shared artifact as ``recsys evaluate --ablation`` wires it: the
    world's oracle, and one tiny ablation variant (1 epoch) trained by the training job."""
    from recsys.cli.evaluate import synthetic_oracle
    from recsys.evaluation.ablation import Ablation
    from recsys.evaluation.evaluate import evaluate
    from recsys_training.ablation import train_variant

    out = tmp_path_factory.mktemp("evaluation")
    result = evaluate(
        trained_artifact,
        tiny_world,
        out=out / "report",
        work_dir=out / "work",  # the shared artifact's folders are read, never written
        max_queries=None,  # all ~2400 held-out watches of the tiny world
        tfrs_epochs=1,
        oracle=synthetic_oracle,
        ablation=Ablation(train_variant, epochs=1, variants=["+ example age"], batch_size=256),
        progress=False,
    )
    return out / "report", result


def test_writes_metrics_and_both_reports(evaluated: tuple[Path, dict[str, Any]]) -> None:
    out, result = evaluated
    for name in ("metrics.json", "report.md", "report.html"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text()) == result
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_report_has_every_section(evaluated: tuple[Path, dict[str, Any]]) -> None:
    out, _ = evaluated
    md = (out / "report.md").read_text()
    for heading in (
        "# Evaluation report: tiny/",
        "## Headline: model vs baselines vs oracle",
        "### What the served index costs",
        "### All ranking metrics",
        "## Segments",
        "### Users by history length",
        "### Videos by age at watch time",
        "### Users by region",
        "### Users by age band",
        "### Users by gender",
        "## Ablations (Figure 6",
        "## Example age and freshness (Figure 4)",
        "## Video embeddings",
        "### Nearest neighbours",
        "## How to read this",
    ):
        assert heading in md, heading
    for plot in ("headline", "segments", "ablation", "example_age", "projection"):
        assert f"(plots/{plot}.png)" in md, plot


def test_html_is_self_contained(evaluated: tuple[Path, dict[str, Any]]) -> None:
    out, _ = evaluated
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 5  # every plot embedded
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere
    assert "<h2>Segments</h2>" in page


def test_without_oracle_and_ablation_the_report_leaves_them_out(
    trained_artifact: Path, tiny_world: Path, tmp_path: Path
) -> None:
    from recsys.evaluation.evaluate import evaluate
    from recsys.evaluation.online import OnlineResult
    from recsys.evaluation.report import headline

    out = tmp_path / "report"
    online = OnlineResult(
        ks=(10, 100),
        queries=40,
        live_recall={10: 0.125, 100: 0.5},
        frozen_recall={10: 0.025, 100: 0.25},
        unknown_live=0,
        unknown_frozen=3,
        store_unavailable=0,
        events_replayed=321,
        cutoff=1_767_225_600,
        seconds=1.5,
    )
    result = evaluate(
        trained_artifact,
        tiny_world,
        out=out,
        work_dir=tmp_path / "work",
        max_queries=300,
        tfrs_epochs=1,
        progress=False,
        online=online.to_dict(),  # an online evaluation's result is reported beside it
    )
    assert "oracle" not in result["methods"]
    assert result["ablation"] is None
    assert "ablation" not in result["seconds"]
    assert json.loads((out / "metrics.json").read_text()) == result
    md = (out / "report.md").read_text()
    assert "## Headline: model vs baselines vs oracle" in md
    assert "Not run: `recsys evaluate --ablation`" in md
    assert "Oracle (true probabilities)" not in md
    assert "(plots/ablation.png)" not in md
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4  # every plot but the ablation chart
    assert "Oracle" not in headline(result)
    assert result["queries"]["evaluated"] == 300
    assert "## Online: the evaluation window replayed into the running service" in md
    assert "| live profiles (store on) | 0.1250 | 0.5000 |" in md
    assert "<td>frozen (artifact)</td>" in page


def test_every_method_and_metrics_json_number_is_in_the_report(
    evaluated: tuple[Path, dict[str, Any]],
) -> None:
    out, result = evaluated
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert set(result["methods"]) == {
        "model_exact",
        "model_index",
        "most_popular",
        "trending",
        "co_watch",
        "tfrs_basic",
        "oracle",
    }
    for name, m in result["methods"].items():
        label = result["method_labels"][name]
        row = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
        for k in map(str, result["ks"]):
            assert fmt(m["recall"][k]) in row, (name, k)
            for metric in ("hit_rate", "ndcg", "map"):
                assert fmt(m[metric][k]) in md, (name, metric, k)
        assert fmt(m["mrr"]) in row
        assert fmt(m["recall"]["100"]) in html
    for group in result["segments"].values():
        for seg in group:
            assert fmt(seg["recall"]["model_exact"]["10"]) in md
    for row in result["ablation"]["rows"]:
        assert fmt(row["metrics"]["recall"]["100"]) in md


def test_numbers_are_sane(evaluated: tuple[Path, dict[str, Any]], trained_artifact: Path) -> None:
    _, result = evaluated
    methods = result["methods"]
    assert result["queries"]["evaluated"] == result["queries"]["available"]
    assert result["catalog_size"] == 1500
    # the baselines learn from exactly the model's training examples
    work = trained_artifact.parent / ".work"
    (examples,) = [p.parent for p in work.glob("examples-*/examples.json")]
    assert result["training_examples"] == ExampleSet.load(examples).counts["train"]
    # the model beats chance (100 / 1500) by far; the oracle is the ceiling
    assert methods["model_exact"]["recall"]["100"] > 3 * 100 / 1500
    for name, m in methods.items():
        assert m["recall"]["100"] <= methods["oracle"]["recall"]["100"], name
        assert m["recall"]["10"] <= m["recall"]["50"] <= m["recall"]["100"], name
    assert methods["most_popular"]["coverage"]["10"] == round(10 / 1500, 4)  # one list for all
    # the tiny world's index is exact: it differs from exact search only by its staleness
    # (the catalog embedded at the cut-off, not on each query's day)
    assert result["index"]["kind"] == "exact"
    assert 0.9 <= result["index"]["recall_vs_exact"]["100"] <= 1.0
    assert set(result["segments"]) >= {"history_length", "video_age", "region", "gender"}


def test_model_recall_matches_the_training_jobs_validation(
    evaluated: tuple[Path, dict[str, Any]], trained_artifact: Path
) -> None:
    # The same queries (all of them), the same embeddings: the training job's final exact
    # Recall@K (Keras towers) and ours (exported SavedModel, numpy search) agree, up to
    # float differences that may swap a near-tie.
    _, result = evaluated
    trained = read_manifest(trained_artifact).metrics
    assert trained["eval_queries"] == result["queries"]["evaluated"]
    for k, value in trained["recall"].items():
        assert result["methods"]["model_exact"]["recall"][k] == pytest.approx(value, abs=2e-3)


def test_example_age_shares_add_up(evaluated: tuple[Path, dict[str, Any]]) -> None:
    _, result = evaluated
    ea = result["example_age"]
    assert sum(ea["observed"]) == pytest.approx(1.0, abs=1e-3)
    assert set(ea["predicted"]) == {"model", "ablation: + example age"}
    for name, shares in ea["predicted"].items():
        total = sum(shares) + ea["not_yet_uploaded"][name]
        assert total == pytest.approx(1.0, abs=2e-3), name
    (row,) = result["ablation"]["rows"]
    assert row["label"] == "+ example age"
    assert row["inputs"] == ["watches", "searches", "example age"]


def test_neighbourhood_overlap_and_pca() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(60, 8)).astype(np.float32)
    ids = np.array([f"v{i}" for i in range(60)])
    same = neighbourhood_overlap(emb, ids, emb, ids, sample=20, k=5)
    assert same["mean_jaccard"] == 1.0  # identical embeddings: identical neighbourhoods
    # the second version lists the videos in another order: still identical by id
    order = rng.permutation(60)
    moved = neighbourhood_overlap(emb, ids, emb[order], ids[order], sample=20, k=5)
    assert moved["mean_jaccard"] == 1.0
    other = neighbourhood_overlap(emb, ids, rng.normal(size=(60, 8)), ids, sample=20, k=5)
    assert other["mean_jaccard"] < 0.5
    # points on a line: the first component explains all the variance
    xy, explained = pca_2d(np.outer(np.arange(10.0), [1.0, 2.0, 2.0]))
    assert explained[0] == pytest.approx(1.0)
    assert np.abs(xy[:, 1]).max() < 1e-9


def test_remap_query_ids_between_vocabularies() -> None:
    def vocabs(items: list[str], tokens: list[str]) -> Vocabularies:
        return Vocabularies(
            items=Vocabulary("items", items),
            tokens=Vocabulary("tokens", tokens),
            countries=Vocabulary("countries", ["US"]),
            regions=Vocabulary("regions", ["na"]),
            genders=Vocabulary("genders", ["f"]),
            channels=Vocabulary("channels", []),
            categories=Vocabulary("categories", []),
        )

    src = vocabs(["a", "b", "c"], ["x", "y"])  # ids: a 2, b 3, c 4; x 2, y 3
    dst = vocabs(["c", "a"], ["y"])  # ids: c 2, a 3 (b unknown); y 2 (x unknown)
    feats = {
        "history": np.array([[2, 3, 4, 0]]),  # a, b, c
        "search_tokens": np.array([[2, 3, 0]]),  # x, y
        "last_search_tokens": np.array([[3, 0]]),
        "country": np.array([2]),
        "region": np.array([0]),
        "gender": np.array([1]),
    }
    out = remap_query_ids(feats, src, dst)
    assert out["history"].tolist() == [[3, 2, 0, 0]]  # a, c: unknown b dropped, packed
    assert out["search_tokens"].tolist() == [[1, 2, 0]]  # x unknown (OOV 1), y 2
    assert out["last_search_tokens"].tolist() == [[2, 0]]
    assert out["country"].tolist() == [2]
    assert out["region"].tolist() == [0]  # padding stays padding
    assert out["gender"].tolist() == [1]  # OOV stays OOV


def test_exact_ranking_never_offers_a_video_before_its_upload_day(
    trained_artifact: Path, tiny_world: Path
) -> None:
    from recsys.evaluation.artifact_model import ArtifactModel
    from recsys.examples.building import load_catalog

    model = ArtifactModel(trained_artifact)
    _, items, content = load_catalog(tiny_world)
    upload = items["upload_time"].to_numpy(np.int64)
    # query moments spread over the world's upload times, mid-day
    times = np.sort(np.random.default_rng(0).choice(upload, 40)) + 43_200
    queries = np.random.default_rng(1).standard_normal((40, model.item_embeddings.shape[1]))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    ranked = model.rank_exact(queries, times, items, content, 50)
    day_start = times // 86_400 * 86_400
    for row, start in zip(ranked, day_start, strict=True):
        offered = row[row >= 0]
        assert len(set(offered.tolist())) == len(offered)
        assert np.all(upload[offered] <= start)
        assert len(offered) == min(50, int((upload <= start).sum()))
