"""Service settings (pydantic-settings): environment variables with the prefix ``NCI_``, one
settings class for the whole project (the service's extends :class:`nci.settings.Settings`).

Every field can be set as ``NCI_<NAME>`` (for example ``NCI_INDEX=/data/index``,
``NCI_API_KEY=...``, ``NCI_CORS_ORIGINS='["https://example.org"]'``); ``nci serve`` flags
override them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from nci.settings import Settings as CoreSettings


class Settings(CoreSettings):
    """The project's settings (``nci.settings``: datasets, home) plus the service's own."""

    # The index directory (nci index build) and where live updates are kept (default INDEX/updates).
    index: Path | None = None
    updates_dir: Path | None = None
    # How often a server applies live updates other replicas committed (NCI_DATABASE_URL).
    follow_interval_s: float = Field(0.2, gt=0)

    # Protection. With an API key set, writes need it in the X-API-Key header; reads too when
    # read_key_required is true.
    api_key: SecretStr | None = None
    read_key_required: bool = False
    cors_origins: list[str] = []

    # Request limits (a request over one gets a 4xx saying which).
    max_query_chars: int = Field(1000, ge=1)
    max_batch: int = Field(64, ge=1)  # queries in one search request
    max_k: int = Field(1000, ge=1, le=1000)
    max_beam: int = Field(100, ge=1)
    default_beam: int = Field(10, ge=1)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    # The whole request body must arrive within this many seconds of the request (408 after).
    body_timeout_s: float = Field(10.0, gt=0)
    max_documents: int = Field(256, ge=1)  # documents in one add request
    max_document_chars: int = Field(100_000, ge=1)
    snippet_chars: int = Field(240, ge=20)
    # Work per request: results (k x queries), beam x queries for methods with a beam, the
    # answer's size, and the time a search may take before the request gets a 503.
    max_results: int = Field(10_000, ge=1)
    max_beam_queries: int = Field(3200, ge=1)
    max_response_bytes: int = Field(8_000_000, ge=1024)
    request_timeout_s: float = Field(60.0, gt=0)

    # Dynamic batching: concurrent searches of one method wait up to batch_window_ms to be run
    # together, up to batch_max_queries queries per model call.
    batch_window_ms: float = Field(3.0, ge=0)
    batch_max_queries: int = Field(64, ge=1)

    # CPU threads for torch and FAISS (default: all cores).
    threads: int | None = Field(None, ge=1)
    # Serve the search page at /.
    page: bool = True

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_no_key(cls, v: SecretStr | None) -> SecretStr | None:
        # NCI_API_KEY= (empty, as compose files pass an unset variable) means: no key
        return v if v is not None and v.get_secret_value() else None


@lru_cache
def get_settings() -> Settings:
    return Settings()
