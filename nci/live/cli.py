"""``nci updates``: inspect, compact and export a served index's live updates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nci.live.export import export
from nci.live.index import open_live_index
from nci.manifest import ArtifactError


def database_url() -> str | None:
    """``NCI_DATABASE_URL``: a PostgreSQL database of live updates shared by replicas."""
    from nci.settings import get_settings

    url = get_settings().database_url
    return url.get_secret_value() if url is not None else None


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Inspect and export an index's live updates.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("info", "print the live counts"),
        ("export", "write the live corpus and semantic ids (for nci train --resume)"),
        ("compact", "checkpoint and compact the SQLite database of live updates"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--index", required=True, type=Path)
        p.add_argument("--updates", type=Path, default=None, help="updates directory (default INDEX/updates)")
        if name == "export":
            p.add_argument("--out", required=True, type=Path)
            p.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        live = open_live_index(
            args.index, args.updates, read_only=args.command == "info", database_url=database_url()
        )
    except ArtifactError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    try:
        if args.command == "info":
            print(json.dumps(live.counts(), indent=2))
        elif args.command == "export":
            export(live, args.out, overwrite=args.overwrite)
            print(args.out)
        else:
            print(live.compact())
    finally:
        live.close()
    return 0
