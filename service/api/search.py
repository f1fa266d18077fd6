"""``POST /v1/search``: rank documents with NCI or a baseline, one query or a batch."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Response

from nci.live import UpdateError
from nci.retrieval import Hit, get_method, resolve_beam
from nci.retrieval.registry import Method
from service.api.deps import LiveDep, ReadAccess, StateDep
from service.config import Settings
from service.models import ErrorResponse, QueryResults, SearchHit, SearchRequest, SearchResponse
from service.snippets import snippet

router = APIRouter(prefix="/v1", tags=["search"])


def _hits(store: dict, hits: list[Hit], query: str, chars: int, with_snippets: bool) -> list[SearchHit]:
    out = []
    for h in hits:
        doc = store.get(h.doc_id)
        if doc is None:  # deleted while the search ran
            continue
        text = doc.get("text", "")
        out.append(
            SearchHit(
                id=h.doc_id,
                score=h.score,
                title=doc.get("title", ""),
                source=h.source,
                snippet=snippet(text, query, chars) if with_snippets else None,
            )
        )
    return out


def _answer(
    body: SearchRequest, queries: list[str], results: list, response: SearchResponse, state: Any
) -> bytes:
    """The response as JSON bytes, built in a worker thread (snippets and serialisation are the
    costly part of a large answer), refused when over ``max_response_bytes``."""
    s = state.settings
    store = state.live.store
    if body.query is not None:
        response.results = _hits(store, results[0], body.query, s.snippet_chars, body.snippets)
    else:
        response.batch = [
            QueryResults(query=q, results=_hits(store, hits, q, s.snippet_chars, body.snippets))
            for q, hits in zip(queries, results, strict=True)
        ]
    data = response.model_dump_json(exclude_none=True).encode()
    if len(data) > s.max_response_bytes:
        raise HTTPException(
            422,
            f"the answer would be {len(data)} bytes, over the limit of {s.max_response_bytes} "
            "(max_response_bytes); ask for fewer results (k, queries) or send snippets: false",
        )
    return data


def _check_limits(body: SearchRequest, queries: list[str], s: Settings) -> None:
    if len(queries) > s.max_batch:
        raise HTTPException(
            422, f"queries: {len(queries)} queries in one request; the limit is {s.max_batch}"
        )
    for i, q in enumerate(queries):
        if len(q) > s.max_query_chars:
            where = "query" if body.query is not None else f"queries[{i}]"
            raise HTTPException(422, f"{where}: {len(q)} characters; the limit is {s.max_query_chars}")
    if body.k > s.max_k:
        raise HTTPException(422, f"k: {body.k} is over the limit of {s.max_k}")
    if body.k * len(queries) > s.max_results:
        raise HTTPException(
            422,
            f"k x queries: {body.k} x {len(queries)} = {body.k * len(queries)} results, over the limit "
            f"of {s.max_results} (max_results); ask for fewer",
        )


def _options(body: SearchRequest, method: Method, s: Settings) -> tuple[dict[str, Any], int | None]:
    """The method's options for this request, and its beam (None for methods without one): the
    one default-beam rule (:func:`nci.retrieval.resolve_beam`), capped at ``max_beam``."""
    options = dict(body.options or {})
    names = {o.name for o in method.options}
    beam = None
    if "beam" in names:
        if body.beam is not None and body.beam > s.max_beam:
            raise HTTPException(422, f"beam: {body.beam} is over the limit of {s.max_beam}")
        beam = body.beam or min(resolve_beam(body.k, None, s.default_beam), s.max_beam)
        options["beam"] = beam
    try:
        return method.parse_options(options), beam
    except ValueError as e:
        raise HTTPException(422, f"options: {e}") from e


@router.post(
    "/search",
    response_model=SearchResponse,
    response_model_exclude_none=True,
    responses={
        400: {"model": ErrorResponse},
        401: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
)
async def search(body: SearchRequest, state: StateDep, live: LiveDep, _: ReadAccess) -> Response:
    """Rank documents for `query` (or each of `queries`) with `method`.

    Concurrent requests of one method are batched on the server. NCI returns at most `beam`
    results; documents added since the model was trained come from a dense fallback
    (`source: "dense"`).
    """
    start = time.perf_counter()
    s = state.settings
    queries = [body.query] if body.query is not None else list(body.queries or [])
    _check_limits(body, queries, s)
    reason = live.methods().get(body.method)
    if reason:
        available = [m for m, r in live.methods().items() if not r]
        raise HTTPException(
            400,
            f"method '{body.method}' is not available in this index ({reason}); "
            f"use one of: {', '.join(available)}",
        )
    options, beam = _options(body, get_method(body.method), s)
    if beam is not None and beam * len(queries) > s.max_beam_queries:
        raise HTTPException(
            422,
            f"beam x queries: {beam} x {len(queries)} = {beam * len(queries)}, over the limit of "
            f"{s.max_beam_queries} (max_beam_queries); send fewer queries or a smaller beam",
        )
    try:
        results = await asyncio.wait_for(
            state.batcher(body.method).submit(queries, body.k, options), s.request_timeout_s
        )
    except UpdateError as e:
        raise HTTPException(400, str(e)) from e
    except asyncio.TimeoutError:
        raise HTTPException(
            503,
            f"the search took longer than the limit of {s.request_timeout_s:g} s (request_timeout_s); "
            "retry, or send fewer queries or a smaller beam",
        ) from None
    metrics = state.metrics
    took = time.perf_counter() - start
    metrics.search_requests.labels(body.method).inc()
    metrics.search_queries.labels(body.method).inc(len(queries))
    metrics.search_latency.labels(body.method).observe(took)
    response = SearchResponse(method=body.method, k=body.k, beam=beam, took_ms=round(took * 1000, 3))
    data = await asyncio.to_thread(_answer, body, queries, results, response, state)
    return Response(content=data, media_type="application/json")
