"""``POST /v1/search``: rank documents with NCI or a baseline, one query or a batch."""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, HTTPException

from nci.live import UpdateError
from nci.retrieval import Hit, get_method, resolve_beam
from nci.retrieval.registry import Method
from service.api.deps import LiveDep, ReadAccess, StateDep
from service.config import Settings
from service.models import ErrorResponse, QueryResults, SearchHit, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1", tags=["search"])

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    "a an and are as at be by did do does for from has have how in is it of on or that the "
    "this to was were what when where which who whom whose why with".split()
)


def snippet(text: str, query: str, chars: int) -> str:
    """About ``chars`` characters of ``text`` around the stretch holding the most query words."""
    if len(text) <= chars:
        return text
    terms = {w for w in (m.group().lower() for m in _WORD.finditer(query)) if w not in _STOP}
    hits = [(m.start(), m.group().lower()) for m in _WORD.finditer(text) if m.group().lower() in terms]
    start = 0
    if hits:
        best = -1
        for pos, _ in hits:
            s = max(0, pos - chars // 4)
            found = len({w for p, w in hits if s <= p < s + chars})
            if found > best:
                best, start = found, s
    start = min(start, len(text) - chars)
    if start > 0:  # begin at a word
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < start + 30 else start
    end = start + chars
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + chars // 2 else end
    return ("…" if start > 0 else "") + text[start:end].strip() + ("…" if end < len(text) else "")


def _hits(state, hits: list[Hit], query: str, with_snippets: bool) -> list[SearchHit]:
    store = state.live.store
    chars = state.settings.snippet_chars
    out = []
    for h in hits:
        doc = store.get(h.doc_id)
        if doc is None:  # deleted while the search ran
            continue
        out.append(
            SearchHit(
                id=h.doc_id,
                score=h.score,
                title=doc.get("title", ""),
                source=h.source,
                snippet=snippet(doc.get("text", ""), query, chars) if with_snippets else None,
            )
        )
    return out


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
    responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
async def search(body: SearchRequest, state: StateDep, live: LiveDep, _: ReadAccess) -> SearchResponse:
    """Rank documents for `query` (or each of `queries`) with `method`.

    Concurrent requests of one method are batched on the server. NCI returns at most `beam`
    results; documents added since the model was trained come from a dense fallback
    (`source: "dense"`).
    """
    start = time.perf_counter()
    s = state.settings
    queries = [body.query] if body.query is not None else list(body.queries or [])
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
    reason = live.methods().get(body.method)
    if reason:
        available = [m for m, r in live.methods().items() if not r]
        raise HTTPException(
            400,
            f"method '{body.method}' is not available in this index ({reason}); "
            f"use one of: {', '.join(available)}",
        )
    options, beam = _options(body, get_method(body.method), s)
    try:
        results = await state.batcher(body.method).submit(queries, body.k, options)
    except UpdateError as e:
        raise HTTPException(400, str(e)) from e
    metrics = state.metrics
    took = time.perf_counter() - start
    metrics.search_requests.labels(body.method).inc()
    metrics.search_queries.labels(body.method).inc(len(queries))
    metrics.search_latency.labels(body.method).observe(took)
    response = SearchResponse(method=body.method, k=body.k, beam=beam, took_ms=round(took * 1000, 3))
    if body.query is not None:
        response.results = _hits(state, results[0], body.query, body.snippets)
    else:
        response.batch = [
            QueryResults(query=q, results=_hits(state, hits, q, body.snippets))
            for q, hits in zip(queries, results, strict=True)
        ]
    return response
