"""``nci bench``: benchmarks (``nci bench ids`` times semantic id building)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or "nci bench"
    if argv and argv[0] == "ids":
        from nci.semantic_ids import bench_main

        return bench_main(argv[1:], prog=f"{prog} ids")
    raise SystemExit(f"{prog}: the retrieval benchmark is not available yet; try `{prog} ids`")


if __name__ == "__main__":
    sys.exit(main())
