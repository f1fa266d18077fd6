"""``nci serve``: serve an index directory over HTTP (uvicorn).

    nci serve --index DIR [--host 127.0.0.1] [--port 8000] [--updates DIR] [--api-key-env VAR]

Every setting of :mod:`service.config` can also come from the environment (``NCI_INDEX``,
``NCI_API_KEY``, ``NCI_READ_KEY_REQUIRED``, ``NCI_CORS_ORIGINS``, limits...).

Start-up, in order: the port is bound (a port in use stops the command at once); the index's live
state is locked for writing (a second server on the same index is refused at once, naming the
first) and its journal replayed; then the server listens, answering ``/healthz`` and ``/readyz``
(503 "loading") while every method is loaded and warmed up in the background. A corrupt or
incomplete index stops the command with a message and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

log = logging.getLogger("service.main")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", type=Path, default=None, help="index directory (default: $NCI_INDEX)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--updates",
        type=Path,
        default=None,
        help="directory for live updates (default: INDEX/updates, or $NCI_UPDATES_DIR)",
    )
    p.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="read the API key from this environment variable (default: NCI_API_KEY)",
    )
    p.add_argument(
        "--read-key-required",
        action="store_true",
        default=None,
        help="with an API key, require it for reads too",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and FAISS")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def bind(host: str, port: int) -> socket.socket | str:
    """A listening socket on ``host:port``, or why not (before anything slow happens)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        return (
            f"cannot listen on {host}:{port} ({e.strerror}); is another server using it? pick another --port"
        )
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Serve an index over HTTP.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    from nci.cli import setup_logging  # no-op for the root logger when `nci serve` set it up

    setup_logging(getattr(logging, args.log_level.upper()))

    from pydantic import ValidationError

    from service.config import Settings

    overrides: dict = {}
    if args.index is not None:
        overrides["index"] = args.index
    if args.updates is not None:
        overrides["updates_dir"] = args.updates
    if args.threads is not None:
        overrides["threads"] = args.threads
    if args.read_key_required:
        overrides["read_key_required"] = True
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            parser.error(f"--api-key-env {args.api_key_env}: that environment variable is empty or unset")
        overrides["api_key"] = key
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        parser.exit(2, f"{parser.prog}: error: bad setting: {e}\n")
    if settings.index is None:
        parser.error("no index: pass --index DIR or set NCI_INDEX")

    from nci.retrieval import set_threads

    set_threads(settings.threads or os.cpu_count() or 1)

    from nci.manifest import ArtifactError
    from service.state import open_live

    sock = bind(args.host, args.port)
    if isinstance(sock, str):
        parser.exit(2, f"{parser.prog}: error: {sock}\n")
    try:
        live = open_live(settings, holder=f"nci serve on {args.host}:{args.port}")
    except (ArtifactError, FileNotFoundError, ValueError, OSError) as e:
        sock.close()
        parser.exit(2, f"{parser.prog}: error: cannot serve {settings.index}: {e}\n")

    import uvicorn

    from service.app import create_app

    app = create_app(settings, live=live, warm_in_background=True)
    log.info(
        "listening on http://%s:%d (API docs at /docs); loading %s", args.host, args.port, settings.index
    )
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False, timeout_graceful_shutdown=10)
    uvicorn.Server(config).run(sockets=[sock])
    error = app.state.service.load_error
    if error is not None:
        parser.exit(2, f"{parser.prog}: error: cannot serve {settings.index}: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
