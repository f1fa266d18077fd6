"""The application factory: ``create_app(settings)`` returns the FastAPI app of one index.

Routes (OpenAPI at ``/openapi.json``, interactive docs at ``/docs``):

- ``POST /v1/search``; ``GET|DELETE /v1/documents/{id}``, ``POST /v1/documents``; ``GET /v1/index``
- ``GET /healthz``, ``GET /readyz``, ``GET /metrics``; ``GET /`` the search page

The index is loaded (and every method warmed up) before the app serves, so a corrupt or
incomplete index fails at start. The service imports inference code only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nci import __version__
from nci.live import LiveIndex
from service.api import documents, health, search
from service.config import Settings, get_settings
from service.state import ServiceState

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


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
    """Reads request bodies up to ``max_bytes`` (413 beyond) and rejects JSON that is not UTF-8
    (400), before any route sees them."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = (
            f"request body over the limit of {self.max_bytes} bytes; send less (for example fewer documents)"
        )
        if length is not None:
            try:
                if int(length) > self.max_bytes:
                    await _error(413, too_big)(scope, receive, send)
                    return
            except ValueError:
                await _error(400, "bad Content-Length header")(scope, receive, send)
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _error(413, too_big)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
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


class MetricsMiddleware:
    """Counts requests by route template, verb and status, and times them."""

    def __init__(self, app: ASGIApp, state: ServiceState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            m = self.state.metrics
            m.http_requests.labels(path, scope.get("method", ""), str(status)).inc()
            m.http_latency.labels(path).observe(time.perf_counter() - start)


def create_app(settings: Settings | None = None, live: LiveIndex | None = None) -> FastAPI:
    """The app for ``settings.index`` (or an already loaded ``live`` index)."""
    settings = settings or get_settings()
    state = ServiceState(settings=settings, live=live)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        if state.live is None:
            await asyncio.to_thread(state.load)
        else:
            state.load()
        state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="nci",
        version=__version__,
        summary="Neural Corpus Indexer retrieval service: NCI, dense, 4-bit PQ and BM25 over one index",
        lifespan=lifespan,
    )
    app.state.service = state

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = _validation_message(list(exc.errors()))
        return _error(422, detail, errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {_safe(request.url.path)}; see /docs for the API"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {_safe(request.url.path)}; see /docs for the API"
        return _error(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; the server log has the details")

    # Routers carry their full prefixes, so metrics label requests by the whole route template.
    app.include_router(search.router)
    app.include_router(documents.router)
    app.include_router(health.index_router)
    app.include_router(health.router)

    if settings.page:

        @app.get("/", include_in_schema=False)
        async def page() -> FileResponse:
            return FileResponse(STATIC / "index.html", media_type="text/html")

    # Outermost last: metrics see every response, including 413s from the body limit.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
    app.add_middleware(MetricsMiddleware, state=state)
    return app
