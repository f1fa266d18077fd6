"""``nci bench`` flags and entry point; ``nci bench ids`` hands over to ``nci.semantic_ids``,
``nci bench scale`` to ``nci.bench.scale``, ``nci bench train`` to ``nci.bench.train_cost``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nci.bench.plan import method_plan
from nci.bench.report import results_markdown
from nci.bench.run import BenchConfig, run_bench


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = BenchConfig()
    p.add_argument("--data", required=True, type=Path, help="prepared dataset (BEIR layout)")
    p.add_argument("--index", required=True, type=Path, help="index directory (nci index build)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--methods", default=",".join(d.methods), help="comma-separated (default all)")
    p.add_argument("--split", default=d.split)
    p.add_argument("--k", type=int, default=d.k, help="results per query (default 100)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument(
        "--beams",
        type=_ints,
        default=d.beams,
        help="NCI beam sizes; the first is reported as 'nci' (default 100,10)",
    )
    p.add_argument(
        "--pq-rerank",
        type=int,
        default=d.pq_rerank,
        help="also run PQ re-ranking k*R candidates exactly (default 0: off)",
    )
    p.add_argument(
        "--hybrid-weight",
        type=float,
        default=d.hybrid_weight,
        help="nci+dense: weight of the cosine similarity beside the NCI log-probability (default 20)",
    )
    p.add_argument(
        "--latency-queries",
        type=int,
        default=d.latency_queries,
        help="seeded sample timed one query at a time (default 200)",
    )
    p.add_argument(
        "--decode-beams",
        type=_ints,
        default=d.decode_beams,
        help="beams for the decoding-vs-reference ratio (default 10,100)",
    )
    p.add_argument(
        "--decode-queries",
        type=int,
        default=d.decode_queries,
        help="queries for the decoding-vs-reference ratio (default 256)",
    )
    p.add_argument(
        "--threads", type=int, default=d.threads, help="CPU threads for torch and FAISS (default 2)"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-queries", type=int, default=None, help="seeded subsample of the test queries")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="measure every method in this process (faster start; memory figures are weaker)",
    )
    p.add_argument("--overwrite", action="store_true")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        split=args.split,
        k=args.k,
        batch_size=args.batch_size,
        beams=args.beams,
        pq_rerank=args.pq_rerank,
        hybrid_weight=args.hybrid_weight,
        latency_queries=args.latency_queries,
        decode_beams=args.decode_beams,
        decode_queries=args.decode_queries,
        threads=args.threads,
        seed=args.seed,
        max_queries=args.max_queries,
        isolate=not args.in_process,
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or "nci bench"
    if argv and argv[0] == "ids":
        from nci.semantic_ids import bench_main

        return bench_main(argv[1:], prog=f"{prog} ids")
    if argv and argv[0] == "scale":
        from nci.bench.scale import main as scale_main

        return scale_main(argv[1:], prog=f"{prog} scale")
    if argv and argv[0] == "train":
        from nci.bench.train_cost import main as train_main

        return train_main(argv[1:], prog=f"{prog} train")
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark NCI and the baselines on one dataset (or: nci bench ids|scale|train ...).",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines are not ours
    config = config_from_args(args)
    method_plan(config)  # fail on a bad method name before loading anything
    report = run_bench(
        args.data, args.index, args.out, config, overwrite=args.overwrite, command=" ".join([prog, *argv])
    )
    print(results_markdown(report))
    return 0
