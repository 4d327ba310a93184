"""The evaluation report: one page in Markdown (plots beside it) and self-contained HTML.

Both are rendered from the same blocks, built from the dict that ``metrics.json`` holds, and
every number goes through :func:`fmt`, so the page shows exactly the values of the JSON
(already rounded to ``DECIMALS`` places there).
"""

from __future__ import annotations

import base64
import html
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.evaluation import plots
from recsys.evaluation.embeddings import Projection
from recsys.evaluation.result import DECIMALS, METHOD_LABELS
from recsys.evaluation.segments import SEGMENT_TITLES

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
PLOTS_DIR = "plots"


def fmt(value: Any) -> str:
    """A number as the report shows it: floats with DECIMALS places, ints as they are."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{DECIMALS}f}"
    return str(value)


@dataclass
class Block:
    """One element of the page: heading, paragraph, list, table or image."""

    kind: str  # "h1", "h2", "h3", "p", "ul", "table", "img", "note"
    text: str = ""
    items: Sequence[str] = ()
    headers: Sequence[str] = ()
    rows: Sequence[Sequence[str]] = ()
    image: str = ""  # plot name (PNG file in plots/)


def _label(result: Mapping[str, Any], name: str) -> str:
    return str(result.get("method_labels", {}).get(name, METHOD_LABELS.get(name, name)))


def _headline_blocks(result: Mapping[str, Any]) -> list[Block]:
    ks = [str(k) for k in result["ks"]]
    k_max = ks[-1]
    methods = result["methods"]
    headers = ["Method", *[f"Recall@{k}" for k in ks], "MRR"]
    headers += [f"Coverage@{k_max}", f"Popularity pct@{k_max}"]
    rows = []
    for name, m in methods.items():
        rows.append(
            [
                _label(result, name),
                *[fmt(m["recall"][k]) for k in ks],
                fmt(m["mrr"]),
                fmt(m["coverage"][k_max]),
                fmt(m["popularity_percentile"][k_max]),
            ]
        )
    blocks = [
        Block("h2", "Headline: model vs baselines vs oracle"),
        Block(
            "p",
            f"{result['queries']['evaluated']} held-out next watches, each ranked against all "
            f"{result['catalog_size']} videos of the catalog; {exclusion_text(result)}. "
            "Exact search unless labelled otherwise. Popularity pct: mean popularity "
            "percentile of the recommended videos "
            "(training watches; 0 = never watched, 100 = most watched); the true next watches "
            f"average {fmt(result['true_next_watch_popularity_percentile'])}.",
        ),
        Block("table", headers=headers, rows=rows),
        Block("img", image="headline", text="Recall@K of every method"),
    ]
    index = result.get("index") or {}
    if index.get("kind"):
        cost = index.get("recall_cost", {})
        overlap = index.get("recall_vs_exact", {})
        blocks.append(Block("h3", f"What the served index costs ({index['kind']} index)"))
        blocks.append(
            Block(
                "table",
                headers=["K", "Recall@K exact", "Recall@K served", "Recall lost", "Index recall"],
                rows=[
                    [
                        k,
                        fmt(methods["model_exact"]["recall"][k]),
                        fmt(methods["model_index"]["recall"][k]),
                        fmt(cost.get(k)),
                        fmt(overlap.get(k)),
                    ]
                    for k in ks
                ],
            )
        )
        blocks.append(
            Block(
                "p",
                "Index recall: the share of the exact top-K that the served index also returns. "
                "Served as the service serves each query at its own time: the index's "
                "candidates re-scored with upload ages at the start of the query's day (as "
                "trained), videos uploaded by the query's time included; exact search ranks "
                "the catalog as it stood at the start of the query's day, so the difference is "
                "the index's approximation plus the videos uploaded that day before the query.",
            )
        )
    headers = ["Method"]
    for k in ks:
        headers += [f"HitRate@{k}", f"NDCG@{k}", f"MAP@{k}"]
    rows = []
    for name, m in methods.items():
        row = [_label(result, name)]
        for k in ks:
            row += [fmt(m["hit_rate"][k]), fmt(m["ndcg"][k]), fmt(m["map"][k])]
        rows.append(row)
    blocks += [Block("h3", "All ranking metrics"), Block("table", headers=headers, rows=rows)]
    return blocks


def _segment_blocks(result: Mapping[str, Any]) -> list[Block]:
    ks = [str(k) for k in result["ks"]]
    k_max = ks[-1]
    others = [m for m in result["methods"] if m not in ("model_exact", "model_index")]
    blocks = [
        Block("h2", "Segments"),
        Block(
            "p",
            f"Recall@K within each group of queries. Model columns at every K, the other "
            f"methods at K = {k_max}.",
        ),
        Block("img", image="segments", text="Recall by segment"),
    ]
    for group, rows in result["segments"].items():
        if not rows:
            continue
        headers = ["Segment", "Queries", "Share", *[f"Model R@{k}" for k in ks]]
        headers += [f"{_short(m)} R@{k_max}" for m in others]
        table = []
        for r in rows:
            line = [r["segment"], fmt(r["queries"]), fmt(r["share"])]
            line += [fmt(r["recall"]["model_exact"][k]) for k in ks]
            line += [fmt(r["recall"][m][k_max]) for m in others]
            table.append(line)
        blocks += [
            Block("h3", SEGMENT_TITLES.get(group, group)),
            Block("table", headers=headers, rows=table),
        ]
    return blocks


_SHORT = {
    "compare_exact": "Compared",
    "most_popular": "Most-pop",
    "trending": "Trending",
    "co_watch": "Co-watch",
    "tfrs_basic": "TFRS basic",
    "ease": "EASE",
    "item_knn": "Item-kNN",
    "oracle": "Oracle",
}


def _short(name: str) -> str:
    return _SHORT.get(name, name)


def _ablation_blocks(result: Mapping[str, Any]) -> list[Block]:
    ablation = result.get("ablation")
    if not ablation:
        return [
            Block("h2", "Ablations"),
            Block("p", "Not run: `recsys evaluate --ablation` trains the Figure 6 variants."),
        ]
    ks = [str(k) for k in result["ks"]]
    k_max = ks[-1]
    headers = ["Variant", "Inputs", "Query layers", *[f"Recall@{k}" for k in ks]]
    headers += [f"MAP@{k_max}", f"NDCG@{k_max}", "Train s"]
    rows = []
    for r in ablation["rows"]:
        m = r["metrics"]
        same = f" (= {r['same_run_as']})" if r.get("same_run_as") else ""
        rows.append(
            [
                r["label"] + same,
                ", ".join(r["inputs"]),
                "-".join(str(w) for w in r["query_layers"]),
                *[fmt(m["recall"][k]) for k in ks],
                fmt(m["map"][k_max]),
                fmt(m["ndcg"][k_max]),
                f"{r['seconds']:.0f}",
            ]
        )
    return [
        Block("h2", "Ablations (Figure 6 of Covington et al. 2016)"),
        Block(
            "p",
            f"Each variant trained by the real training job on the same data and split for "
            f"{ablation['epochs']} epoch(s) (batch {ablation['batch_size']}), scored on the same "
            "queries with exact search. Fewer epochs than the main model: compare variants "
            "with each other, not with the headline.",
        ),
        Block("table", headers=headers, rows=rows),
        Block("img", image="ablation", text="Ablation chart"),
    ]


def _example_age_blocks(result: Mapping[str, Any]) -> list[Block]:
    ea = result["example_age"]
    names = list(ea["predicted"])
    headers = ["Days since upload", "Observed", *[f"Predicted: {n}" for n in names]]
    rows = [
        [b, fmt(ea["observed"][i]), *[fmt(ea["predicted"][n][i]) for n in names]]
        for i, b in enumerate(ea["bins"])
    ]
    rows.append(["not uploaded yet", fmt(0.0), *[fmt(ea["not_yet_uploaded"][n]) for n in names]])
    cold = ""
    if result["split"]["name"] == "time":
        cold = (
            " Videos uploaded after the cut-off are new to the model (out-of-vocabulary ids, "
            "content features only), so example age alone cannot make it predict them; see "
            "the cold-start segment above."
        )
    return [
        Block("h2", "Example age and freshness (Figure 4)"),
        Block(
            "p",
            "Share of the true next watches by the video's age at watch time, against the "
            "model's softmax probability mass on videos of that age (mean over the queries, "
            "example age 0 as at serving). A model that learned freshness follows the "
            "observed spike at young ages; 'not uploaded yet' is mass on videos that did not "
            "exist at the query's time. The chart divides each bin's share by its width in days "
            "(log scale); the table gives the share of each bin." + cold,
        ),
        Block("img", image="example_age", text="Predicted vs observed watch share by age"),
        Block("table", headers=headers, rows=rows),
    ]


def _embedding_blocks(result: Mapping[str, Any]) -> list[Block]:
    emb = result["embeddings"]
    blocks = [
        Block("h2", "Video embeddings"),
        Block(
            "p",
            f"PCA of {emb['projected_videos']} watched videos' embeddings. Top-10 neighbours "
            f"share the video's category {fmt(emb['category_agreement_at_10'])} of the time "
            f"(chance: {fmt(emb['category_agreement_chance'])}).",
        ),
        Block("img", image="projection", text="2-D projection of video embeddings"),
        Block("h3", "Nearest neighbours of the most-watched video of the largest categories"),
    ]
    rows = []
    for ex in emb["neighbour_examples"]:
        for j, nb in enumerate(ex["neighbours"]):
            anchor = f"{ex['title']} [{ex['category']}]" if j == 0 else ""
            rows.append([anchor, f"{nb['title']} [{nb['category']}]", fmt(nb["similarity"])])
    blocks.append(Block("table", headers=["Video", "Neighbour", "Cosine"], rows=rows))
    cmp = emb.get("compare")
    if cmp:
        blocks.append(Block("h3", "How much the neighbourhoods moved"))
        if cmp.get("mean_jaccard") is None:
            blocks.append(Block("p", "The two versions share too few videos to compare."))
        else:
            blocks.append(
                Block(
                    "p",
                    f"Against {result['compare_to']['path']}: over {cmp['videos']} sampled "
                    f"videos, the mean Jaccard overlap of the top-{cmp['k']} neighbours is "
                    f"{fmt(cmp['mean_jaccard'])} (median {fmt(cmp['median_jaccard'])}; "
                    f"unchanged {fmt(cmp['share_unchanged'])}, entirely new "
                    f"{fmt(cmp['share_disjoint'])}).",
                )
            )
    return blocks


HOW_TO_READ = [
    "Every query is one held-out watch: the context is what the user did strictly before it "
    "(as a serving request at that moment would see), the single relevant item is the video "
    "actually watched next. With one relevant item Recall@K equals HitRate@K.",
    "Recall@K: share of next watches found in the top K. NDCG@K and MRR also reward ranking "
    "it near the top; MAP@K is the average precision (the paper's Figure 6 metric).",
    "Baselines see the same training examples as the model. Most popular: training watch "
    "counts. Trending: the last 7 days of training watches before the cut-off (last split: "
    "before the query's day), half-life 1 day. Co-watch: videos watched right after the "
    "user's 5 latest watches. TFRS basic: the TFRS tutorial's id-only two-tower (user id vs "
    "video id, in-batch softmax, Adagrad 0.1, 3 epochs) at the model's batch size.",
    "Oracle: the synthetic world's true next-watch probabilities, the ceiling of any "
    "recommender on this data (shown only for synthetic worlds).",
    "Coverage@K: share of the catalog recommended to anyone. Popularity pct: a model far above "
    "the true next watches' value over-recommends popular videos.",
    "Model (exact search): every video embedded by the candidate tower with its upload age at "
    "the start of the query's day, videos not yet uploaded then left out, exact dot products "
    "(the training job's validation protocol). Served index vs exact: the recall the served "
    "index (ScaNN over the embeddings frozen at export) loses against that.",
    f"Every number here is the value in metrics.json, rounded to {DECIMALS} decimals.",
]


def build_blocks(result: Mapping[str, Any]) -> list[Block]:
    """The whole page as blocks, in order."""
    art = result["artifact"]
    split = result["split"]
    cutoff = f", cut-off {split['cutoff_utc']}" if split.get("cutoff_utc") else ""
    blocks = [
        Block("h1", f"Evaluation report: {art['name']}/{art['version']}"),
        Block(
            "ul",
            items=[
                f"Artifact: {art['path']} (embedding dim {art['embedding_dim']}, "
                f"query layers {art['query_layers']}, temperature {art['temperature']})",
                f"Data: {result['data']['path']} ({result['data']['name']}, fingerprint "
                f"{result['data']['fingerprint'][:12]})",
                f"Split: {split['name']}{cutoff}; {result['queries']['evaluated']} of "
                f"{result['queries']['available']} held-out watches evaluated (seed "
                f"{result['queries']['seed']}); {result['training_examples']} training examples",
                f"Created {result['created_at']}; took {result['seconds']['total']:.0f} s",
            ],
        ),
    ]
    if result.get("warnings"):
        blocks.append(Block("note", items=[f"Warning: {w}" for w in result["warnings"]]))
    blocks += _headline_blocks(result)
    blocks += _segment_blocks(result)
    blocks += _ablation_blocks(result)
    blocks += _example_age_blocks(result)
    blocks += _embedding_blocks(result)
    blocks += online_blocks(result.get("online"))
    blocks += [Block("h2", "How to read this"), Block("ul", items=HOW_TO_READ)]
    return blocks


def online_blocks(online: Mapping[str, Any] | None) -> list[Block]:
    """The online evaluation (live vs frozen profiles, as served), when there is one."""
    if not online:
        return []
    ks = [str(k) for k in online["ks"]]
    recall = online["recall"]
    rows = [
        [label, *(fmt(recall[key][k]) for k in ks)]
        for key, label in (("live", "live profiles (store on)"), ("frozen", "frozen (artifact)"))
    ]
    return [
        Block("h2", "Online: the evaluation window replayed into the running service"),
        Block(
            "p",
            f"{online['events_replayed']} events from the cut-off on were recorded in time "
            f"order through RecordEvents; before each of {online['queries']} held-out watches "
            "the service was asked for that user at that moment, with the events recorded so "
            f"far (live) and with the artifact's profile alone (frozen). Rule: {online['rule']}.",
        ),
        Block("table", headers=["profiles", *(f"R@{k}" for k in ks)], rows=rows),
        Block(
            "note",
            items=[
                f"Unknown users (NOT_FOUND, counted as misses): live "
                f"{online['unknown_users']['live']}, frozen {online['unknown_users']['frozen']}; "
                f"live answers served without the store: {online['store_unavailable']}; "
                f"took {online['seconds']} s."
            ],
        ),
    ]


def write_online_report(online: Mapping[str, Any], out: str | Path, target: str) -> Path:
    """``online.md`` and ``online.html`` for an online evaluation run on its own."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    blocks = [Block("h1", f"Online evaluation of {target}"), *online_blocks(online)]
    (out / "online.md").write_text(render_markdown(blocks) + "\n")
    html_path = out / "online.html"
    html_path.write_text(render_html(blocks, {}, f"Online evaluation: {target}"))
    return html_path


_NUMBER = re.compile(r"^[-+]?\d[\d,]*(\.\d+)?%?$|^–$")


def _numeric_columns(block: Block) -> list[bool]:
    """Whether every cell of each column is a number (right-aligned in both renderings)."""
    return [
        bool(block.rows) and all(_NUMBER.match(row[j]) for row in block.rows)
        for j in range(len(block.headers))
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    """Markdown text of the page; images point at ``plots/<name>.png``."""
    lines: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            lines += ["#" * int(b.kind[1]) + " " + b.text, ""]
        elif b.kind == "p":
            lines += [b.text, ""]
        elif b.kind in ("ul", "note"):
            prefix = "> " if b.kind == "note" else "- "
            lines += [prefix + item for item in b.items] + [""]
        elif b.kind == "table":
            lines.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            lines.append("|" + "|".join("---:" if n else "---" for n in _numeric_columns(b)) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            lines.append("")
        elif b.kind == "img":
            lines += [f"![{b.text}]({PLOTS_DIR}/{b.image}.png)", ""]
    return "\n".join(lines)


_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       max-width: 1180px; margin: 24px auto; padding: 0 16px; color: #222; line-height: 1.45; }
h1 { font-size: 26px; border-bottom: 2px solid #1f77b4; padding-bottom: 6px; }
h2 { font-size: 21px; margin-top: 34px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 16px; margin-top: 22px; }
table { border-collapse: collapse; margin: 10px 0 16px; font-size: 13px; }
th, td { border: 1px solid #d0d0d0; padding: 4px 8px; }
th { background: #f2f5f9; text-align: center; }
td { text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; display: block; margin: 8px 0 18px; }
.note { background: #fff4e5; border-left: 4px solid #f0a030; padding: 8px 12px; }
"""


def render_html(blocks: Sequence[Block], images: Mapping[str, bytes], title: str) -> str:
    """A self-contained HTML page: inline CSS, PNGs embedded as base64 data URIs."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            parts.append(f"<{b.kind}>{esc(b.text)}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{esc(b.text)}</p>")
        elif b.kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "note":
            parts.append('<div class="note">' + "<br>".join(esc(i) for i in b.items) + "</div>")
        elif b.kind == "table":
            numeric = _numeric_columns(b)
            head = "".join(f"<th>{esc(h)}</th>" for h in b.headers)
            body = "".join(
                "<tr>"
                + "".join(
                    f'<td class="num">{esc(c)}</td>' if numeric[j] else f"<td>{esc(c)}</td>"
                    for j, c in enumerate(row)
                )
                + "</tr>"
                for row in b.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "img" and b.image in images:
            data = base64.b64encode(images[b.image]).decode("ascii")
            parts.append(f'<img alt="{esc(b.text)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    return "\n".join(parts)


def render_plots(result: Mapping[str, Any], projection: Projection | None) -> dict[str, bytes]:
    """Every chart of the report as PNG bytes, by name."""
    images = {
        "headline": plots.headline_chart(result),
        "segments": plots.segment_chart(result, ["history_length", "video_age"]),
        "example_age": plots.example_age_chart(result["example_age"]),
    }
    if result.get("ablation"):
        images["ablation"] = plots.ablation_chart(result["ablation"], result["ks"])
    if projection is not None:
        images["projection"] = plots.projection_chart(projection)
    return images


def write_reports(
    result: Mapping[str, Any], out: str | Path, projection: Projection | None = None
) -> tuple[Path, Path]:
    """Write ``report.md`` (with ``plots/*.png``) and ``report.html`` into ``out``."""
    out = Path(out)
    images = render_plots(result, projection)
    (out / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    for name, png in images.items():
        (out / PLOTS_DIR / f"{name}.png").write_bytes(png)
    blocks = build_blocks(result)
    blocks = [b for b in blocks if b.kind != "img" or b.image in images]
    md_path, html_path = out / REPORT_MD, out / REPORT_HTML
    md_path.write_text(render_markdown(blocks) + "\n")
    art = result["artifact"]
    html_path.write_text(render_html(blocks, images, f"Evaluation: {art['name']}/{art['version']}"))
    return md_path, html_path


def exclusion_text(result: Mapping[str, Any]) -> str:
    """The watched-video rule the rankings used, in words (``exclude_watched`` of a result)."""
    rule = result.get("exclude_watched")
    if not rule:
        return "watched videos kept"
    done = "excluded" if rule["applied"] else "kept"
    if rule["rule"] != "auto":
        return f"watched videos {done} (--exclude-watched {rule['rule']})"
    why = "users rewatch in this data" if rule["rewatches"] else "no rewatches in this data"
    return f"watched videos {done} (--exclude-watched auto: {why})"


def headline(result: Mapping[str, Any]) -> str:
    """A few lines for the terminal: Recall@K of every method (exact search)."""
    ks = [str(k) for k in result["ks"]]
    width = max(len(_label(result, m)) for m in result["methods"])
    lines = [
        f"{result['split']['name']} split, {result['queries']['evaluated']} queries, "
        f"{result['catalog_size']} videos, {exclusion_text(result)}:"
    ]
    for name, m in result["methods"].items():
        recalls = "  ".join(f"R@{k} {fmt(m['recall'][k])}" for k in ks)
        lines.append(f"  {_label(result, name):<{width}}  {recalls}")
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    return "\n".join(lines)
