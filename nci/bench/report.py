"""The benchmark's report as a Markdown table (``results.md``) and a plot (``recall_vs_qps.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# speed ratios the README aims for: ours over the reference decoder, NCI's QPS over dense exact's
AIMS = {"decode_vs_generate": 10.0, "nci_vs_dense": 0.8}  # the speed aims the report marks met or not

# the ratios rows of results.md, in order, with the aim each is held to
RATIO_AIMS = (
    ("decode_vs_generate_beam10", AIMS["decode_vs_generate"]),
    ("decode_vs_generate_beam100", AIMS["decode_vs_generate"]),
    ("decode_vs_generate_same_batch_beam10", AIMS["decode_vs_generate"]),
    ("decode_vs_generate_same_batch_beam100", AIMS["decode_vs_generate"]),
    ("nci_vs_dense_qps_b1", AIMS["nci_vs_dense"]),
    ("nci_vs_dense_qps_b64", AIMS["nci_vs_dense"]),
)


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` places, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _header(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    return [
        f"# Retrieval benchmark: {report['dataset']}",
        "",
        f"{report['queries']} {report['split']} queries, top {report['config']['k']}, "
        f"batch {report['config']['batch_size']}; "
        f"latency over {report['latency_queries']} queries one at a time.",
        f"{m['cpu']}, {m['usable_cpus']} usable CPUs, {m['threads']} threads; torch {m['torch']}, "
        f"faiss {m['faiss']}; commit {report['commit'] or 'unknown'}; {report['date']}.",
        "",
    ]


def _method_rows(methods: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| method | success@1 | success@10 | success@100 | MRR@100 | nDCG@10 | recall@100 | QPS b1 "
        "| QPS b64 | p50 ms | p99 ms | index MB | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in methods.items():
        if r.get("skipped"):
            lines.append(f"| {key} | skipped: {r['skipped']} |" + " |" * 11)
            continue
        lines.append(
            f"| {key} | {fmt(r['success@1'])} | {fmt(r['success@10'])} | {fmt(r['success@100'])} "
            f"| {fmt(r['mrr@100'])} | {fmt(r['ndcg@10'])} | {fmt(r.get('recall@100'))} "
            f"| {fmt(r['qps_b1'], 1)} | {fmt(r['qps_b64'], 1)} "
            f"| {fmt(r['p50_ms'], 1)} | {fmt(r['p99_ms'], 1)} | {fmt(r['index_bytes'] / 2**20, 1)} "
            f"| {fmt(r['peak_rss_mb'], 0)} |"
        )
    return lines


def _ratio_row(name: str, value: float | None, aim: float) -> str:
    met = "–" if value is None else ("yes" if value >= aim else "no")
    return f"| {name} | {fmt(value, 2)}{'' if value is None else 'x'} | >= {aim}x | {met} |"


def _ratio_rows(speed: dict[str, Any]) -> list[str]:
    lines = ["", "## Speed ratios", "", "| ratio | value | aim | met |", "|---|---|---|---|"]
    lines += [_ratio_row(key, speed.get(key), aim) for key, aim in RATIO_AIMS]
    for key, ratios in (speed.get("nci_vs_dense_by_beam") or {}).items():
        lines += [_ratio_row(f"{name} ({key})", v, AIMS["nci_vs_dense"]) for name, v in ratios.items()]
    return lines


def _decode_lines(d: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Decoding alone ({d['queries']} queries, encoder excluded; ours in batches of "
        f"{d['batch_size']}, {d.get('setup_s', 0.0):.2f} s to build the per-node heads once). "
        "The reference is the full model step plus a Python trie per beam per step, run one query "
        f"at a time as the NCI reference code does (decode_vs_generate) and in batches of "
        f"{d['batch_size']} (decode_vs_generate_same_batch):",
        "",
    ]
    for key, v in d.items():
        if key.startswith("beam"):
            lines.append(
                f"- {key}: ours {v['fast_qps']:.1f} q/s; reference {v['reference_qps']:.1f} q/s one "
                f"at a time, {v.get('reference_same_batch_qps', float('nan')):.1f} q/s batched; "
                f"identical rankings: {'yes' if v['identical'] else 'NO'}"
            )
    return lines


def _notes(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Notes",
        "",
        "- success@k is 1 when a relevant document is in the top k (the NCI paper's Recall@k); "
        "means over every judged test query (a query with no results scores 0).",
        "- QPS b64: test queries / wall time searching them in batches, query encoding included; "
        "QPS b1, p50, p99: one query at a time.",
        "- index MB: every file the method loads (its query encoder or model included), "
        "document store excluded.",
        "- peak RSS MB: peak resident memory of a fresh process that loaded only this method "
        "and ran all its queries (Python and libraries included)."
        if report["config"]["isolate"]
        else "- peak RSS MB: measured in one shared process (--in-process): peak resident memory "
        "after resetting the peak before each method, so earlier methods' memory is included.",
        "- nci returns at most beam documents: success@100 of a beam-10 run counts its 10.",
    ]
    return lines + [f"- {n}" for n in report["notes"]]


def results_markdown(report: dict[str, Any]) -> str:
    """``results.md``: the methods table, the speed ratios against their aims, notes, the command."""
    lines = _header(report) + _method_rows(report["methods"]) + _ratio_rows(report["speed"])
    if "decode" in report["speed"]:
        lines += _decode_lines(report["speed"]["decode"])
    lines += _notes(report)
    if report.get("command"):
        lines += ["", "Command:", "", f"    {report['command']}"]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """success@1 (filled) and success@10 (hollow) against QPS at batch 64, log x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, r) in enumerate((k, r) for k, r in report["methods"].items() if not r.get("skipped")):
        c = colors[i % len(colors)]
        x = r["qps_b64"]
        ax.plot([x, x], [r["success@1"], r["success@10"]], color=c, alpha=0.4, linewidth=1)
        ax.scatter(x, r["success@1"], color=c, marker="o", label=key, zorder=3)
        ax.scatter(x, r["success@10"], facecolors="white", edgecolors=c, marker="s", zorder=3)
        ax.annotate(key, (x, r["success@1"]), textcoords="offset points", xytext=(6, -4), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.2)
    ax.set_xlabel(
        f"queries per second at batch {report['config']['batch_size']}, encoder included (log scale)"
    )
    ax.set_ylabel("success@k")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{report['dataset']}: success@1 (filled circle) and success@10 (hollow square)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="method", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
