"""Health checks, readiness, Prometheus metrics and a summary of the loaded index."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from nci.retrieval import get_method
from service.api.deps import LiveDep, ReadAccess, StateDep
from service.models import ErrorResponse, IndexInfo, Status

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Status, response_model_exclude_none=True)
async def healthz() -> Status:
    """The process is up and answering."""
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses={503: {"model": Status}})
async def readyz(state: StateDep) -> Response:
    """The index is loaded and every method warmed up; `journal` is the position of the last live
    update applied here (replicas over one database converge on the same position)."""
    if not state.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ready", "journal": state.live.seq})


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        401: {"model": ErrorResponse},
    },
)
async def metrics(state: StateDep, _: ReadAccess) -> Response:
    """Request counts, latency histograms per method, batch sizes and index size (Prometheus).
    Needs the API key when reads do (``NCI_READ_KEY_REQUIRED``)."""
    m = state.metrics
    if state.live is not None:
        counts = state.live.counts()
        m.documents.set(counts["documents"])
        m.added.set(counts["added"])
        m.deleted.set(counts["deleted"])
        m.log_records.set(counts["log_records"])
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)


index_router = APIRouter(prefix="/v1", tags=["index"])


@index_router.get("/index", response_model=IndexInfo)
async def index_info(state: StateDep, live: LiveDep, _: ReadAccess) -> IndexInfo:
    """The loaded index: documents, which methods it serves, and the request limits."""
    s = state.settings
    counts = live.counts()
    return IndexInfo(
        name=live.index.path.name,
        documents=counts["documents"],
        added=counts["added"],
        deleted=counts["deleted"],
        methods=live.methods(),
        options={
            name: {
                o.name: {"type": o.type.__name__, "default": o.default, "help": o.help} for o in spec.options
            }
            for name, spec in ((m, get_method(m)) for m in live.methods())
        },
        default_beam=s.default_beam,
        limits={
            "max_query_chars": s.max_query_chars,
            "max_batch": s.max_batch,
            "max_k": s.max_k,
            "max_beam": s.max_beam,
            "max_body_bytes": s.max_body_bytes,
            "max_documents": s.max_documents,
            "max_document_chars": s.max_document_chars,
        },
    )
