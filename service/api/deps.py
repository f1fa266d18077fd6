"""Dependencies shared by the routers, as ``Annotated`` aliases."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from nci.live import LiveIndex
from service.config import Settings
from service.state import ServiceState

API_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="needed for writes when the service has an API key, and for "
    "reads too when NCI_READ_KEY_REQUIRED is set",
)


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def get_live(state: Annotated[ServiceState, Depends(get_state)]) -> LiveIndex:
    if not state.ready:
        raise HTTPException(503, "the index is still loading; retry shortly (GET /readyz says when)")
    return state.live


StateDep = Annotated[ServiceState, Depends(get_state)]
LiveDep = Annotated[LiveIndex, Depends(get_live)]


def _check_key(settings: Settings, given: str | None) -> None:
    expected = settings.api_key.get_secret_value() if settings.api_key else ""
    if not given:
        raise HTTPException(
            401,
            f"this request needs the API key in the {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    if not secrets.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    ):
        raise HTTPException(
            401, f"wrong API key in the {API_KEY_HEADER} header", headers={"WWW-Authenticate": "ApiKey"}
        )


def require_write(state: StateDep, key: Annotated[str | None, Security(api_key_header)]) -> None:
    if state.settings.api_key is not None:
        _check_key(state.settings, key)


def require_read(state: StateDep, key: Annotated[str | None, Security(api_key_header)]) -> None:
    if state.settings.api_key is not None and state.settings.read_key_required:
        _check_key(state.settings, key)


WriteAccess = Annotated[None, Depends(require_write)]
ReadAccess = Annotated[None, Depends(require_read)]
