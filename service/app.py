"""The application factory: ``create_app(settings)`` returns the FastAPI app of one index.

Routes (OpenAPI at ``/openapi.json``, interactive docs at ``/docs``):

- ``POST /v1/search``; ``GET|DELETE /v1/documents/{id}``, ``POST /v1/documents``; ``GET /v1/index``
- ``GET /healthz``, ``GET /readyz``, ``GET /metrics``; ``GET /`` the search page

The index is loaded (and every method warmed up) before the app serves, so a corrupt or
incomplete index fails at start. The service imports inference code only. The docs' scripts and
styles are served by the app itself (``fastapi-offline``), so ``/docs`` works without a network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nci import __version__
from nci.live import LiveIndex
from service.api import documents, health, search
from service.config import Settings, get_settings
from service.state import ServiceState

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

# Metrics label any other verb "other": a client must not be able to create series at will.
STANDARD_VERBS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# Status counted for a request whose client left before a response started (nginx's "client
# closed request"); nothing is sent, since there is no one to send it to.
CLIENT_CLOSED = 499
# An oversized body is read and discarded up to this many times the limit before the 413.
DRAIN_FACTOR = 8
# Until service/config.py declares ``body_timeout_s``, the app reads it with this default.
DEFAULT_BODY_TIMEOUT_S = 10.0
# Set in the scope of a HEAD request that is routed as a GET (see HeadMiddleware).
HEAD_KEY = "nci.head"


def _safe(text: str) -> str:
    """Text that encodes as UTF-8 (input may carry lone surrogates, which JSON output cannot)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error(
    status: int, detail: str, errors: list[dict] | None = None, headers: dict | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"detail": _safe(detail)}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers)


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _content_type_hint(content_type: str | None, errors: list[dict]) -> str | None:
    """What to say when the body failed as a whole because it was not read as JSON: FastAPI
    parses JSON only under a JSON Content-Type, so the model got bytes ("should be a valid
    dictionary"), which does not tell the client that the header is what is missing."""
    if content_type is not None and _is_json(content_type):
        return None
    if not any(tuple(e.get("loc", ())) == ("body",) and e.get("type") != "missing" for e in errors):
        return None
    got = f"Content-Type: {content_type}" if content_type else "no Content-Type header"
    return f"body: not read as JSON ({got}); send it with the header Content-Type: application/json"


def _validation_message(errors: list[dict]) -> tuple[str, list[dict]]:
    """One readable line per error ("k: Input should be less than or equal to 1000"), and the
    errors without the offending input (which may be large or not encodable)."""
    lines, clean = [], []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        if loc and loc[0] in {"body", "query", "path", "header"}:
            loc = loc[1:]
        where = ".".join(loc) or "body"
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            msg = f"malformed JSON ({ctx.get('error', 'cannot parse')}); send a JSON object"
            where, loc = "body", []
        elif e.get("type") == "missing" and where == "body":
            msg = "missing request body; send a JSON object"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{where}: {msg}")
        clean.append({"loc": [_safe(p) for p in loc], "msg": _safe(msg), "type": e.get("type")})
    return _safe("; ".join(lines)), clean


class BodyLimitMiddleware:
    """Reads request bodies before any route sees them: at most ``max_bytes`` (413 beyond), in
    full within ``timeout_s`` of the start (408 after), and UTF-8 only (400).

    An oversized body is still read, and thrown away, up to ``DRAIN_FACTOR`` times the limit or
    the time limit, whichever comes first, and only then answered: a server that closes a
    connection with unread data resets it, and a client still sending then sees the reset, not
    the 413. Past that bound the 413 closes the connection.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = DEFAULT_BODY_TIMEOUT_S):
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = DRAIN_FACTOR * max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
                if declared < 0:
                    raise ValueError(declared)
            except ValueError:
                await _error(400, "bad Content-Length header")(scope, receive, send)
                return
            if declared > self.drain_bytes:
                await self._too_big(scope, receive, send, close=True)
                return
        body, size, ended = await self._read(receive)
        if ended == "disconnect":
            return  # nobody to answer; MetricsMiddleware counts it as CLIENT_CLOSED
        if size > self.max_bytes:
            await self._too_big(scope, receive, send, close=ended != "complete")
            return
        if ended == "timeout":
            await _error(
                408,
                f"request body not received in full within the time limit of {self.timeout_s:g} s "
                "(NCI_BODY_TIMEOUT_S); send the whole body without pausing, and as many bytes as "
                "Content-Length says",
                headers={"Connection": "close"},
            )(scope, receive, send)
            return
        if body:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as e:
                await _error(
                    400,
                    f"request body is not valid UTF-8 (byte 0x{body[e.start]:02x} at offset "
                    f"{e.start}); send JSON encoded as UTF-8",
                )(scope, receive, send)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> tuple[bytes, int, str]:
        """The body (nothing of one over the limit), the bytes read, and how reading ended:
        "complete", "disconnect", "timeout", or "bound" (over the drain bound)."""
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return b"", size, "disconnect"
                chunk = message.get("body", b"")
                size += len(chunk)
                if size <= self.max_bytes:
                    chunks.append(chunk)
                elif size > self.drain_bytes:
                    return b"", size, "bound"
                else:
                    chunks.clear()  # draining: keep nothing of a body that gets a 413
                if not message.get("more_body", False):
                    return b"".join(chunks), size, "complete"
        return b"", size, "timeout"

    async def _too_big(self, scope: Scope, receive: Receive, send: Send, close: bool) -> None:
        detail = (
            f"request body over the limit of {self.max_bytes} bytes; send less (for example fewer documents)"
        )
        await _error(413, detail, headers={"Connection": "close"} if close else None)(scope, receive, send)


class HeadMiddleware:
    """Answers HEAD wherever GET is answered: the GET's status and headers, without the body.
    (FastAPI's routes answer only the verbs they declare, so HEAD would get a 405.)"""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            elif message["type"] == "http.response.pathsend":  # a file, on servers that send them
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        inner = {**scope, "method": "GET", HEAD_KEY: True}
        try:
            await self.app(inner, receive, send_headers_only)
        finally:
            if "route" in inner:  # the route template, for MetricsMiddleware
                scope["route"] = inner["route"]


class MetricsMiddleware:
    """Counts requests by route template, verb (the standard ones, else "other") and status, and
    times them. A request whose client left before a response started counts as 499."""

    def __init__(self, app: ASGIApp, state: ServiceState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: int | None = None
        client_left = failed = False

        async def receive_wrapper() -> Message:
            nonlocal client_left
            message = await receive()
            if message["type"] == "http.disconnect":
                client_left = True
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except ClientDisconnect:
            # a route read the body after the client left: nothing to answer, nothing to log
            client_left = True
            if status is not None:
                raise
        except BaseException:
            failed = True
            raise
        finally:
            if status is None:
                # nothing sent: the client left, or an error the server answers with a 500
                status = CLIENT_CLOSED if client_left and not failed else 500
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            verb = scope.get("method", "")
            m = self.state.metrics
            m.http_requests.labels(path, verb if verb in STANDARD_VERBS else "other", str(status)).inc()
            m.http_latency.labels(path).observe(time.perf_counter() - start)


def _lifespan(state: ServiceState, warm_in_background: bool):
    """Loading and warming at start, stopping at the end (see :func:`create_app`)."""

    async def warm_then_start() -> None:
        try:
            await asyncio.to_thread(state.warm)
        except Exception as e:
            state.load_error = e
            log.error("cannot serve %s: %s", state.settings.index, e)
            signal.raise_signal(signal.SIGTERM)  # uvicorn shuts down; nci serve exits with status 2
            return
        state.start()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warming = None
        if warm_in_background and state.live is not None:
            warming = asyncio.create_task(warm_then_start())
        else:
            await asyncio.to_thread(state.load)
            state.start()
        try:
            yield
        finally:
            if warming is not None and not warming.done():
                await asyncio.wait([warming])  # let the warm-up thread end before closing
            await state.stop()

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is ``{"detail": ...}`` with a message that says what to fix."""

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = _validation_message(list(exc.errors()))
        hint = _content_type_hint(request.headers.get("content-type"), list(exc.errors()))
        return _error(422, hint or detail, errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {_safe(request.url.path)}; see /docs for the API"
        elif exc.status_code == 405:
            method = "HEAD" if request.scope.get(HEAD_KEY) else request.method
            detail = f"{method} is not allowed on {_safe(request.url.path)}; see /docs for the API"
        return _error(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; the server log has the details")


def _add_middleware(app: FastAPI, settings: Settings, state: ServiceState) -> None:
    # Outermost last: metrics see every response, including 413s from the body limit.
    app.add_middleware(HeadMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout_s,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
    app.add_middleware(MetricsMiddleware, state=state)


def create_app(
    settings: Settings | None = None, live: LiveIndex | None = None, warm_in_background: bool = False
) -> FastAPI:
    """The app for ``settings.index`` (or an already opened ``live`` index).

    By default the app starts serving once every method is warmed up. With
    ``warm_in_background`` (``nci serve``) it answers at once: ``/healthz`` is 200, ``/readyz``
    503 and searches 503 until the warm-up ends; if it fails, the server is asked to stop and
    ``app.state.service.load_error`` says why."""
    settings = settings or get_settings()
    state = ServiceState(settings=settings, live=live)
    # FastAPIOffline: a FastAPI app whose /docs and /redoc load their scripts from the app itself.
    app = FastAPIOffline(
        title="nci",
        version=__version__,
        summary="Neural Corpus Indexer retrieval service: NCI, dense, 4-bit PQ and BM25 over one index",
        lifespan=_lifespan(state, warm_in_background),
    )
    app.state.service = state
    _add_error_handlers(app)
    # Routers carry their full prefixes, so metrics label requests by the whole route template.
    app.include_router(search.router)
    app.include_router(documents.router)
    app.include_router(health.index_router)
    app.include_router(health.router)
    if settings.page:

        @app.get("/", include_in_schema=False)
        async def page() -> FileResponse:
            return FileResponse(STATIC / "index.html", media_type="text/html")

    _add_middleware(app, settings, state)
    return app
