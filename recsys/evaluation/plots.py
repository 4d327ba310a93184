"""Charts of the evaluation report as PNG bytes (matplotlib's Agg canvas, no display needed).

Figures are built with the object-oriented API (``Figure`` + ``FigureCanvasAgg``), so the
global pyplot state and backend are never touched; every function takes the metrics dict
that ``metrics.json`` holds (or the embedding projection) and returns PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recsys.evaluation.embeddings import Projection

DPI = 110
# Fixed colours per method, so a method looks the same in every chart.
METHOD_COLOURS = {
    "model_exact": "#1f77b4",
    "model_index": "#6baed6",
    "compare_exact": "#9467bd",
    "most_popular": "#7f7f7f",
    "trending": "#bcbd22",
    "co_watch": "#ff7f0e",
    "tfrs_basic": "#2ca02c",
    "oracle": "#d62728",
}
CATEGORY_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79",
)  # fmt: skip


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def headline_chart(result: Mapping[str, Any]) -> bytes:
    """Grouped bars: Recall@K of every method (exact search unless labelled), each K."""
    methods = list(result["methods"])
    ks = [str(k) for k in result["ks"]]
    labels = result["method_labels"]
    fig = Figure(figsize=(9.5, 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(ks))
    for i, name in enumerate(methods):
        values = [result["methods"][name]["recall"][k] for k in ks]
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width,
            values,
            width,
            label=labels.get(name, name),
            color=METHOD_COLOURS.get(name),
        )
    ax.set_xticks(x, [f"Recall@{k}" for k in ks])
    ax.set_ylabel("share of next watches found")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncols=2)
    ax.set_title(f"Recall@K over the whole catalog ({result['catalog_size']:,} videos)")
    return _png(fig)


def segment_chart(result: Mapping[str, Any], groups: Sequence[str]) -> bytes:
    """Recall@K_max per segment for the model, the best baselines and the oracle."""
    k = str(result["ks"][-1])
    shown = [
        m for m in ("model_exact", "co_watch", "tfrs_basic", "most_popular", "oracle")
        if m in result["methods"]
    ]  # fmt: skip
    present = [g for g in groups if result["segments"].get(g)]
    fig = Figure(figsize=(9.5, 3.6 * max(len(present), 1)))
    for j, group in enumerate(present):
        ax = fig.add_subplot(len(present), 1, j + 1)
        rows = result["segments"][group]
        x = np.arange(len(rows))
        width = 0.8 / len(shown)
        for i, name in enumerate(shown):
            vals = [r["recall"][name][k] for r in rows]
            ax.bar(
                x + (i - (len(shown) - 1) / 2) * width,
                vals,
                width,
                label=result["method_labels"].get(name, name),
                color=METHOD_COLOURS.get(name),
            )
        ax.set_xticks(x, [f"{r['segment']}\n(n={r['queries']:,})" for r in rows], fontsize=8)
        ax.set_ylabel(f"Recall@{k}")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(group.replace("_", " "))
        if j == 0:
            ax.legend(fontsize=8, ncols=3, loc="upper left")
    fig.tight_layout()
    return _png(fig)


def example_age_chart(example_age: Mapping[str, Any]) -> bytes:
    """The paper's Figure 4: observed vs predicted watch share per day of video age.

    Each bin's share is divided by its width in days, so that unequal bins compare; the
    open-ended last bin (over a year) is left out of the chart (the report's table has it).
    """
    bins = list(example_age["bins"])
    widths = np.array([_bin_width(b) for b in bins])
    shown = np.isfinite(widths)
    x = np.arange(int(shown.sum()))
    fig = Figure(figsize=(9.5, 4.4))
    ax = fig.add_subplot()

    def per_day(values: Sequence[float]) -> np.ndarray:
        density = np.asarray(values, dtype=np.float64)[shown] / widths[shown]
        return np.where(density > 0, density, np.nan)  # log scale: zero shares not drawn

    ax.plot(
        x, per_day(example_age["observed"]), "k-o", lw=2.5, label="observed (true next watches)"
    )
    styles = ["-s", "--^", ":v", "-.D"]
    for i, (name, values) in enumerate(example_age["predicted"].items()):
        uses = example_age.get("uses_example_age", {}).get(name)
        suffix = "" if uses is None else (" (with example age)" if uses else " (no example age)")
        ax.plot(x, per_day(values), styles[i % len(styles)], label=f"predicted: {name}{suffix}")
    ax.set_yscale("log")
    ax.set_xticks(x, [b for b, keep in zip(bins, shown, strict=True) if keep], fontsize=8)
    ax.set_xlabel("days since upload at watch time")
    ax.set_ylabel("share of watches per day of age")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Freshness: predicted vs observed watch share by video age (Figure 4)")
    return _png(fig)


def _bin_width(label: str) -> float:
    """Width in days of an age bin labelled "lo-hi" (inf for "lo+")."""
    if label.endswith("+"):
        return float("inf")
    lo, hi = label.split("-")
    return float(hi) - float(lo)


def ablation_chart(ablation: Mapping[str, Any], ks: Sequence[int]) -> bytes:
    """Figure 6: Recall@K and MAP@K_max by feature set (left) and by depth (right)."""
    rows = ablation["rows"]
    groups = [("features", "query inputs"), ("depth", "depth (hidden ReLU layers)")]
    present = [(g, t) for g, t in groups if any(r["group"] == g for r in rows)]
    fig = Figure(figsize=(11, 4.2))
    k_max = str(ks[-1])
    for j, (group, title) in enumerate(present):
        ax = fig.add_subplot(1, len(present), j + 1)
        sub = [r for r in rows if r["group"] == group]
        x = np.arange(len(sub))
        for k in ks:
            ax.plot(x, [r["metrics"]["recall"][str(k)] for r in sub], "-o", label=f"Recall@{k}")
        ax.plot(x, [r["metrics"]["map"][k_max] for r in sub], "k--s", label=f"MAP@{k_max}")
        names = [r["label"] if group == "features" else str(r["depth"]) for r in sub]
        ax.set_xticks(x, names, fontsize=8, rotation=15 if group == "features" else 0)
        ax.set_ylim(0, None)
        ax.grid(alpha=0.3)
        ax.set_title(title)
        if j == 0:
            ax.legend(fontsize=8)
    fig.suptitle(f"Ablations, {ablation['epochs']} training epoch(s) each (Figure 6)")
    fig.tight_layout()
    return _png(fig)


def projection_chart(projection: Projection) -> bytes:
    """Scatter of the 2-D PCA projection of video embeddings, coloured by category."""
    fig = Figure(figsize=(8, 6.5))
    ax = fig.add_subplot()
    cats = projection.categories
    names = [c for c in dict.fromkeys(cats.tolist()) if c != "other"]
    names = sorted(names, key=lambda c: -int((cats == c).sum()))
    if "other" in set(cats.tolist()):
        mask = cats == "other"
        xy = projection.xy[mask]
        ax.scatter(xy[:, 0], xy[:, 1], s=4, c="#cccccc", label="other", alpha=0.6)
    for i, name in enumerate(names):
        mask = cats == name
        colour = CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)]
        xy = projection.xy[mask]
        ax.scatter(xy[:, 0], xy[:, 1], s=6, color=colour, label=name, alpha=0.8)
    ev = projection.explained_variance
    ax.set_xlabel(f"PC 1 ({100 * ev[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * ev[1]:.1f}% of variance)")
    ax.legend(fontsize=8, markerscale=3, loc="best")
    ax.set_title(f"Video embeddings, PCA of {len(cats):,} watched videos, by category")
    return _png(fig)
