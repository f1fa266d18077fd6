"""Where does each relevance grade land in a ranking? A check on a collection's grade codes.

For every grade in a raw three-column qrels file (``query document grade``, as Cranfield's
``cranqrel``), prints how many rows carry it, the median rank that the run gives those documents
(unretrieved ones count as rank k+1) and the share found in the top 1 and top 10. A grade whose
documents rank above the "complete answer" grade is not a "not relevant" code.

    python scripts/qrels_grades.py --qrels $NCI_DATASETS/cranfield/cranqrel \\
        --run results/cranfield/runs/bm25.trec results/cranfield/runs/dense.trec

Query numbers in the qrels must match the run's (``nci data prepare cranfield`` numbers queries
1..n in file order, as the qrels do). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from nci.evaluate import read_trec_run


def read_raw_qrels(path: Path) -> list[tuple[str, str, int]]:
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != 3:
            raise SystemExit(f"{path}:{lineno}: expected 'query document grade', got {line!r}")
        rows.append((str(int(cols[0])), str(int(cols[1])), int(cols[2])))
    return rows


def grade_table(rows: list[tuple[str, str, int]], run: dict[str, dict[str, float]]) -> list[dict]:
    ranks = {}
    for qid, scores in run.items():
        for rank, doc in enumerate(sorted(scores, key=scores.get, reverse=True), 1):
            ranks[qid, doc] = rank
    depth = max((len(s) for s in run.values()), default=0)
    by_grade: dict[int, list[int]] = defaultdict(list)
    for qid, doc, grade in rows:
        if qid in run:
            by_grade[grade].append(ranks.get((qid, doc), depth + 1))
    return [
        {
            "grade": grade,
            "rows": len(r),
            "median_rank": statistics.median(r),
            "top1": sum(x == 1 for x in r) / len(r),
            "top10": sum(x <= 10 for x in r) / len(r),
        }
        for grade, r in sorted(by_grade.items())
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--qrels", type=Path, required=True, help="raw qrels file: query document grade")
    p.add_argument("--run", type=Path, nargs="+", required=True, help="TREC run files (nci bench runs/)")
    args = p.parse_args(argv)
    rows = read_raw_qrels(args.qrels)
    print("| run | grade | rows | median rank | in top 1 | in top 10 |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in args.run:
        for r in grade_table(rows, read_trec_run(path)):
            print(
                f"| {path.stem} | {r['grade']} | {r['rows']} | {r['median_rank']:g} | "
                f"{r['top1']:.3f} | {r['top10']:.3f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
