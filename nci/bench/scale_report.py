"""``nci bench scale``'s report: the figures it measures, ``results.md`` and the log-log plot.

Every figure is declared once in :data:`FIGURES` (its key in ``results.json``, its column label,
its unit and its table); the table, the plot, the growth exponents and the test all read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str  # "s", "ms", "MB", "q/s" or "" (a count)
    group: str

    def cost(self, value: float) -> float:
        """The figure as a cost (what grows when things get worse): queries per second invert."""
        return 1.0 / value if self.unit == "q/s" else value


BUILD = "Build (one core)"
DISK = "Index on disk and decoder tables (MB; query encoder excluded)"
LOAD = "Load time and peak memory (fresh process per method)"
QUERIES = "Queries per second (query encoding excluded)"
LIVE = "Live updates (LiveIndex, SQLite store)"

BEAM_METHODS = ("nci",)
SEARCH_METHODS = ("dense", "pq", "bm25")
LOADED = ("nci", "dense", "pq", "bm25", "live")


def _figures(beams: tuple[int, ...] = (10, 100)) -> tuple[Figure, ...]:
    figs = [
        Figure("ids_s", "ids s", "s", BUILD),
        Figure("trie_s", "trie s", "s", BUILD),
        Figure("centroids_s", "centroids s", "s", BUILD),
        Figure("trie_nodes", "trie nodes", "", BUILD),
        Figure("internal_nodes", "internal nodes", "", BUILD),
        Figure("index_build_s", "index build s", "s", BUILD),
        Figure("build_peak_rss_mb", "build peak RSS MB", "MB", BUILD),
        Figure("nci_index_mb", "nci", "MB", DISK),
        Figure("centroids_mb", "of which centroids.npy", "MB", DISK),
        Figure("dense_index_mb", "dense", "MB", DISK),
        Figure("pq_index_mb", "pq", "MB", DISK),
        Figure("bm25_index_mb", "bm25", "MB", DISK),
        Figure("node_heads_mb", "NodeHeads (RAM)", "MB", DISK),
        Figure("node_heads_s", "NodeHeads build s", "s", DISK),
    ]
    for m in LOADED:
        figs.append(Figure(f"{m}_load_s", f"{m} load s", "s", LOAD))
        if m == "nci":
            figs.append(Figure("id_space_s", "of which IdSpace s", "s", LOAD))
    figs += [Figure(f"{m}_peak_rss_mb", f"{m} peak RSS MB", "MB", LOAD) for m in LOADED]
    for beam in beams:
        for b in ("b1", "b64"):
            figs.append(Figure(f"nci_beam{beam}_qps_{b}", f"nci beam {beam} {b}", "q/s", QUERIES))
    for m in SEARCH_METHODS:
        for b in ("b1", "b64"):
            figs.append(Figure(f"{m}_qps_{b}", f"{m} {b}", "q/s", QUERIES))
    figs += [
        Figure("live_add_p50_ms", "add p50 ms", "ms", LIVE),
        Figure("live_add_p99_ms", "add p99 ms", "ms", LIVE),
        Figure("live_add_batch_ms", "add batch ms", "ms", LIVE),
        Figure("live_delete_p50_ms", "delete p50 ms", "ms", LIVE),
        Figure("live_delete_p99_ms", "delete p99 ms", "ms", LIVE),
        Figure("bm25_rebuild_s", "BM25 rebuild s", "s", LIVE),
    ]
    return tuple(figs)


def figures(report: dict[str, Any] | None = None) -> tuple[Figure, ...]:
    """The figures of a report (its NCI beams), or of the default configuration."""
    beams = tuple(report["config"]["beams"]) if report else (10, 100)
    return _figures(beams)


def fmt(value: Any, unit: str) -> str:
    """A table cell: counts with separators, seconds and milliseconds to 3 significant digits."""
    if value is None:
        return "–"
    if unit == "":
        return f"{int(value):,}"
    if unit in ("MB", "q/s"):
        return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def growth(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Log-log slope of every figure's cost between consecutive N (1 = linear in N)."""
    rows = report["rows"]
    out = []
    for a, b in zip(rows, rows[1:], strict=False):
        slopes: dict[str, float | None] = {}
        for f in figures(report):
            va, vb = a["figures"].get(f.key), b["figures"].get(f.key)
            ok = va is not None and vb is not None and va > 0 and vb > 0
            slopes[f.key] = math.log(f.cost(vb) / f.cost(va)) / math.log(b["n"] / a["n"]) if ok else None
        out.append({"from": a["n"], "to": b["n"], "slopes": slopes})
    return out


def _table(report: dict[str, Any], group: str, cell) -> list[str]:
    figs = [f for f in figures(report) if f.group == group]
    lines = [
        f"### {group}",
        "",
        "| N | " + " | ".join(f.label for f in figs) + " |",
        "|---|" + "---|" * len(figs),
    ]
    return lines + [cell(r, figs) for r in report["rows"]]


def _value_row(row: dict[str, Any], figs: list[Figure]) -> str:
    cells = [fmt(row["figures"].get(f.key), f.unit) for f in figs]
    return f"| {row['n']:,} | " + " | ".join(cells) + " |"


def _growth_lines(report: dict[str, Any]) -> list[str]:
    steps = growth(report)
    if not steps:
        return []
    lines = [
        "## Growth",
        "",
        "Log-log slope of each cost between consecutive N (1.0: grows like N; 0: flat; queries per "
        "second are inverted to cost per query first). Costs that grew faster than N (slope > 1.1):",
        "",
    ]
    by_key = {f.key: f for f in figures(report)}
    fast = [
        f"- {by_key[k].group.split(' (')[0].lower()}, {by_key[k].label}: slope {s:.2f} "
        f"({step['from']:,} -> {step['to']:,})"
        for step in steps
        for k, s in step["slopes"].items()
        if s is not None and s > 1.1
    ]
    lines += fast or ["- none"]
    lines += ["", "All slopes:", ""]
    for group in dict.fromkeys(f.group for f in figures(report)):
        figs = [f for f in figures(report) if f.group == group]
        lines += ["| N | " + " | ".join(f.label for f in figs) + " |", "|---|" + "---|" * len(figs)]
        for step in steps:
            cells = ["–" if step["slopes"][f.key] is None else f"{step['slopes'][f.key]:.2f}" for f in figs]
            lines.append(f"| {step['from']:,} -> {step['to']:,} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def results_markdown(report: dict[str, Any]) -> str:
    """``results.md``: one table per group of figures (rows N), the growth slopes, the notes."""
    m, c = report["machine"], report["config"]
    lines = [
        "# Scale benchmark: cost against corpus size",
        "",
        f"Seeded synthetic corpora ({c['dim']}-d vectors around {c['clusters']} modes, texts over "
        f"{c['topics']} topic vocabularies); ids k={c['k']}, leaf {c['leaf_size']}; an untrained NCI "
        f"model of the default training configuration. {m['cpu']}, {m['usable_cpus']} usable CPUs, "
        f"{m['threads']} threads; torch {m['torch']}, faiss {m['faiss']}; commit "
        f"{report['commit'] or 'unknown'}; {report['date']}.",
        "",
    ]
    for group in dict.fromkeys(f.group for f in figures(report)):
        lines += _table(report, group, _value_row) + [""]
    lines += _growth_lines(report)
    lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]]
    if report.get("command"):
        lines += ["", "Command:", "", f"    {report['command']}"]
    return "\n".join(lines) + "\n"


# the plot's panels: (title, unit, figure keys); query speed is drawn as milliseconds per query
PANELS = (
    (
        "build and load",
        "seconds",
        (
            "ids_s",
            "trie_s",
            "centroids_s",
            "index_build_s",
            "node_heads_s",
            "id_space_s",
            "nci_load_s",
            "dense_load_s",
            "bm25_rebuild_s",
        ),
    ),
    (
        "size and memory",
        "MB",
        (
            "nci_index_mb",
            "centroids_mb",
            "dense_index_mb",
            "pq_index_mb",
            "bm25_index_mb",
            "node_heads_mb",
            "nci_peak_rss_mb",
            "dense_peak_rss_mb",
            "live_peak_rss_mb",
        ),
    ),
)


def _per_query_keys(report: dict[str, Any]) -> tuple[str, ...]:
    keys = [f.key for f in figures(report) if f.unit == "q/s"]
    return (*keys, "live_add_p50_ms", "live_delete_p50_ms")


def plot(report: dict[str, Any], path: Path) -> None:
    """Cost against N, log-log: build/load seconds, MB, and milliseconds per query or update;
    a dashed line shows cost proportional to N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {f.key: f for f in figures(report)}
    ns = [r["n"] for r in report["rows"]]
    panels = [*PANELS, ("per query or update", "milliseconds", _per_query_keys(report))]
    fig, axes = plt.subplots(1, 3, figsize=(17, 7.5))
    for ax, (title, unit, keys) in zip(axes, panels, strict=True):
        starts = []
        for key in keys:
            f = by_key[key]
            pts = [
                (r["n"], f.cost(v) * (1000 if f.unit == "q/s" else 1))
                for r in report["rows"]
                if (v := r["figures"].get(key)) is not None and v > 0
            ]
            if not pts:
                continue
            starts.append(pts[0][1])
            label = f"{f.label}: ms per query" if f.unit == "q/s" else key
            ax.plot(*zip(*pts, strict=True), marker="o", markersize=4, label=label)
        if starts and len(ns) > 1:
            anchor = math.exp(sum(map(math.log, starts)) / len(starts))
            ax.plot([ns[0], ns[-1]], [anchor, anchor * ns[-1] / ns[0]], "k--", alpha=0.4, label="∝ N")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("documents N")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2)
    fig.suptitle("nci bench scale: cost against corpus size (log-log)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
