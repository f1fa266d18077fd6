"""``nci data prepare``: read a named raw dataset and write it in the canonical layout, with its
manifest; and the ``nci data`` command line (``prepare``, ``check``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nci.data.layout import SPLITS, DataError, check_dataset, write_dataset
from nci.data.sources import (
    ALIASES,
    DATASET_SOURCES,
    canonical_name,
    dataset_names,
    read_dataset,
    resolve_source,
    seeded_split_names,
)
from nci.data.squad import DEFAULT_TEST_FRACTION
from nci.manifest import ArtifactError, atomic_output_dir, read_manifest, write_manifest

DESCRIPTION = "Dataset preparation: raw collections into one canonical layout, and the loaders for it."


@dataclass(frozen=True)
class PrepareConfig:
    dataset: str  # canonical name: a key of nci.data.sources.DATASET_SOURCES
    source: str  # the file or folder read
    seed: int = 0  # squad split seed
    test_fraction: float | None = None  # squad only: share of each paragraph's questions in test


def prepare(
    name: str,
    out: str | Path,
    *,
    src: str | Path | None = None,
    seed: int = 0,
    test_fraction: float | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Prepare dataset ``name`` into ``out`` (canonical layout + manifest); return the manifest."""
    name = canonical_name(name)
    if test_fraction is None:
        test_fraction = DATASET_SOURCES[name].default_test_fraction  # None for a fixed split
    start = time.perf_counter()
    source = resolve_source(name, src)
    data = read_dataset(name, source, seed, test_fraction)
    config = PrepareConfig(dataset=name, source=str(source), seed=seed, test_fraction=test_fraction)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        write_dataset(data, tmp)
        counts = check_dataset(tmp)  # what is written must load back
        counts |= data.counts
        manifest = write_manifest(
            tmp,
            stage="data",
            config=config,
            inputs=data.inputs,
            counts=counts,
            wall_seconds=time.perf_counter() - start,
            extra={"format": "beir", **data.notes},
        )
    return manifest


def summary(out: str | Path, counts: dict[str, int]) -> str:
    """The one line ``prepare`` prints: documents, queries and qrels lines of each split."""
    splits = [s for s in SPLITS if f"{s}_queries" in counts]  # train and test always, dev if any
    queries = ", ".join(f"{s} {counts[f'{s}_queries']}" for s in splits)
    lines = ", ".join(f"{s} {counts[f'{s}_qrels']}" for s in splits)
    line = f"{out}: {counts['documents']} documents, {counts['queries']} queries ({queries}), "
    line += f"qrels lines {lines}"
    if not any(counts[f"{s}_queries"] for s in splits):
        line += " (no judged queries: nothing to train on or evaluate with)"
    return line


# --------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser(
        "prepare",
        help="prepare a raw dataset in the BEIR layout",
        description="Parse a raw dataset and write corpus.jsonl, queries.jsonl, qrels/ and manifest.json.",
        epilog="--src for each format: "
        + "; ".join(f"{name}: {source.src}" for name, source in DATASET_SOURCES.items() if source.src),
    )
    aliases = ", ".join(f"{alias} = {name}" for alias, name in ALIASES.items())
    p.add_argument(
        "name",
        choices=dataset_names(),
        help=f"dataset or format ({aliases})" if aliases else "dataset or format",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument(
        "--src",
        type=Path,
        help="raw dataset file, folder or zip (a dataset's default: $NCI_DATASETS/<folder>, else a "
        "download into the cache; a format needs it)",
    )
    seeded = " and ".join(seeded_split_names())
    p.add_argument("--seed", type=int, default=0, help=f"seed of the {seeded} train/test split (default 0)")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help=f"squad: share of each paragraph's questions put in test (default {DEFAULT_TEST_FRACTION})",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    c = sub.add_parser("check", help="validate a prepared dataset directory and print its counts")
    c.add_argument("dir", type=Path, help="a directory written by `prepare`")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "nci data", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if args.action == "prepare":
            manifest = prepare(
                args.name,
                args.out,
                src=args.src,
                seed=args.seed,
                test_fraction=args.test_fraction,
                overwrite=args.overwrite,
            )
            print(summary(args.out, manifest["counts"]))
        else:
            read_manifest(args.dir, stage="data")
            print(json.dumps(check_dataset(args.dir)))
    except (DataError, ArtifactError, OSError) as e:  # OSError: --out exists, unreadable files
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    return 0
