"""``nci search``: rank documents of an index for queries given on the command line.

The index is read as a server leaves it: its base files plus the journal of live additions and
deletions (``INDEX/updates``, or ``--updates``), replayed read-only, so ``nci search`` returns
what the stopped server returned.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nci.retrieval import add_ensemble_argument, method_names


def parse_option(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` (a number) for ``--option``."""
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    """``--index`` and ``--updates``: an index directory read with its journal of live updates."""
    p.add_argument("--index", required=True, type=Path, help="index directory (nci index build)")
    p.add_argument(
        "--updates",
        type=Path,
        default=None,
        help="live updates directory (default INDEX/updates, when present)",
    )


def add_method_arguments(p: argparse.ArgumentParser, default: str) -> None:
    """``--method`` (the registry's methods) and its options: ``--beam``, ``--rerank`` and any
    method's option as ``--option NAME=VALUE``. Shared by ``nci search`` and ``nci evaluate``."""
    p.add_argument("--method", default=default, choices=method_names(), help=f"(default {default})")
    p.add_argument(
        "--beam", type=int, default=None, help="methods with a beam: beam size (default max(k, 10))"
    )
    p.add_argument("--rerank", type=int, default=0, help="pq only: re-rank k*R candidates exactly")
    p.add_argument(
        "--option",
        type=parse_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another search option of the method (e.g. weight=20 for nci+dense); repeatable",
    )


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The method's options from ``--beam``, ``--rerank`` and ``--option``, as the registry
    declares them (a flag the method has no option for is an error unless left at its default)."""
    from nci.retrieval import get_method

    spec = get_method(args.method)
    names = {o.name for o in spec.options}
    opts: dict[str, Any] = dict(args.option)
    if args.beam is not None:
        if "beam" not in names:
            raise ValueError(f"--beam: method '{args.method}' has no beam")
        opts["beam"] = args.beam
    if args.rerank:
        if "rerank" not in names:
            raise ValueError(f"--rerank: method '{args.method}' does not re-rank")
        opts["rerank"] = args.rerank
    return spec.parse_options(opts)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_index_arguments(p)
    add_method_arguments(p, default="dense")
    p.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    add_ensemble_argument(p, note="; end the list with -- before the queries")
    p.add_argument("--json", action="store_true", help="print one JSON object per query")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and FAISS")
    p.add_argument("queries", nargs="+", metavar="QUERY")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Search an index.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be >= 1")
    from nci.live import open_live_index
    from nci.retrieval import ensemble, load_index, resolve_beam, set_threads

    if args.threads:
        set_threads(args.threads)
    try:
        opts = method_options(args)
    except ValueError as e:
        parser.error(str(e))
    live = open_live_index(args.index, args.updates, read_only=True)
    if args.ensemble:
        if args.method != "nci":
            parser.error("--ensemble works with --method nci")
        beam = resolve_beam(args.k, args.beam)
        retriever = ensemble([live.index, *(load_index(p) for p in args.ensemble)], beam=beam)
        results = retriever.search(list(args.queries), args.k)
    else:
        results = live.search(args.method, list(args.queries), args.k, **opts)
    for query, hits in zip(args.queries, results, strict=True):
        print_hits(query, hits, live.store, args.method, as_json=args.json)
    return 0


def print_hits(
    query: str, hits: list[Any], store: dict[str, dict[str, str]], method: str, as_json: bool
) -> None:
    if as_json:
        results = [
            {
                "id": h.doc_id,
                "score": round(h.score, 6),
                "title": store[h.doc_id]["title"],
                "source": h.source,
            }
            for h in hits
        ]
        print(json.dumps({"query": query, "method": method, "results": results}))
        return
    print(f"# {query}")
    if not hits:
        print("  (no results)")
    for rank, h in enumerate(hits, 1):
        title = store[h.doc_id]["title"] or store[h.doc_id]["text"][:60]
        print(f"{rank:>4}  {h.doc_id}\t{h.score:.4f}\t{title}")


if __name__ == "__main__":
    from nci.cli import setup_logging

    setup_logging()
    sys.exit(main())
