"""``/v1/documents``: read, add and delete documents of the live index."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, status

from nci.live import DocumentExists, DocumentNotFound, IdSpaceFull, UpdateError
from service.api.deps import LiveDep, ReadAccess, StateDep, WriteAccess
from service.models import (
    AddDocumentsRequest,
    AddDocumentsResponse,
    DeleteResponse,
    DocumentOut,
    ErrorResponse,
)

router = APIRouter(prefix="/v1/documents", tags=["documents"])

_ERRORS = {401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


@router.get("/{doc_id:path}", response_model=DocumentOut, responses=_ERRORS)
async def get_document(doc_id: str, live: LiveDep, _: ReadAccess) -> DocumentOut:
    """A live document, with its semantic id."""
    try:
        return DocumentOut(**live.get(doc_id))
    except DocumentNotFound as e:
        raise HTTPException(404, f"{e}; it was never added or has been deleted") from e


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AddDocumentsResponse,
    responses={**_ERRORS, 409: {"model": ErrorResponse}, 413: {"model": ErrorResponse}},
)
async def add_documents(
    body: AddDocumentsRequest, state: StateDep, live: LiveDep, _: WriteAccess
) -> AddDocumentsResponse:
    """Add one or many documents. They are searchable by every method as soon as this returns,
    and the addition is on disk (it survives a crash or restart)."""
    s = state.settings
    if len(body.documents) > s.max_documents:
        raise HTTPException(
            413,
            f"documents: {len(body.documents)} in one request; the limit is "
            f"{s.max_documents}; send them in several requests",
        )
    docs = []
    for i, d in enumerate(body.documents):
        size = len(d.title) + len(d.text)
        if size > s.max_document_chars:
            raise HTTPException(
                413,
                f"documents[{i}]: {size} characters of title and text; the limit is {s.max_document_chars}",
            )
        docs.append({"_id": d.id, "title": d.title, "text": d.text})
    try:
        added = await asyncio.to_thread(live.add, docs)
    except (DocumentExists, IdSpaceFull) as e:
        raise HTTPException(409, str(e)) from e
    except UpdateError as e:
        raise HTTPException(422, str(e)) from e
    state.metrics.updates.labels("add").inc(len(added))
    return AddDocumentsResponse(added=added, documents=len(live))


@router.delete("/{doc_id:path}", response_model=DeleteResponse, responses=_ERRORS)
async def delete_document(doc_id: str, state: StateDep, live: LiveDep, _: WriteAccess) -> DeleteResponse:
    """Delete a document from every method at once; the deletion is on disk when this returns."""
    try:
        await asyncio.to_thread(live.delete, doc_id)
    except DocumentNotFound as e:
        raise HTTPException(404, f"{e}; nothing was deleted") from e
    state.metrics.updates.labels("delete").inc()
    return DeleteResponse(deleted=doc_id, documents=len(live))
