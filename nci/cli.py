"""The ``nci`` console script: one subcommand per pipeline stage.

Each subcommand lives in its own module, which also runs as ``python -m nci.<module>``. Modules
are imported only when their command runs, so ``nci --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import sys

# command -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("nci.data", "prepare a raw dataset in the BEIR layout (squad, scifact, glasgow)"),
    "embed": ("nci.embed", "embed a prepared corpus with a BERT encoder"),
    "ids": ("nci.semantic_ids", "build recursive k-means semantic ids and the docid trie"),
    "querygen": ("nci.querygen", "pseudo-queries: doc-as-query, doc2query train and generate"),
    "train": ("nci.train", "train the NCI model (encoder + PAWA decoder, R-drop)"),
    "index": ("nci.index", "assemble a self-contained index directory"),
    "build": ("nci.build", "the whole pipeline on a prepared dataset, with a recipe chosen from it"),
    "search": ("nci.search", "search an index from the command line"),
    "evaluate": ("nci.evaluate", "evaluate a method of an index on a dataset's test queries"),
    "bench": ("nci.bench", "benchmark every method in one run (or: nci bench ids)"),
    "serve": ("service.main", "serve an index over HTTP"),
    "updates": ("nci.live.cli", "inspect, compact and export a served index's live updates"),
}


# Third-party loggers kept at WARNING: faiss.loader reports at INFO each library it tries, failed
# attempts as a ModuleNotFoundError that reads like an error; bm25s logs index building at DEBUG.
QUIET_LOGGERS = ("faiss.loader", "bm25s")


class _AtLeast(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr at ``level`` (unless logging is set up already), third-party chatter at
    WARNING and above."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(level, logging.WARNING))
        # bm25s sets its logger to DEBUG when it is imported, which may come after this call
        if not any(isinstance(f, _AtLeast) for f in logger.filters):
            logger.addFilter(_AtLeast(logging.WARNING))


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: nci COMMAND [options]   (nci COMMAND --help for a command's options)", ""]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    if argv[0] in {"-V", "--version"}:
        from nci import __version__

        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"nci: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    setup_logging()
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(argv[1:], prog=f"nci {name}") or 0)


if __name__ == "__main__":
    sys.exit(main())
