"""Request and response models of the HTTP API (separate classes for what comes in and goes out)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from nci.retrieval import get_method, method_names


def _method_enum(schema: dict[str, Any]) -> None:
    # the registry's methods, read when the schema is made (a method registered later shows too)
    schema["enum"] = method_names()


def _check_method(value: str) -> str:
    if value not in method_names():
        raise ValueError(f"unknown method '{value}'; choose from {', '.join(method_names())}")
    return value


def _kind(value: Any) -> str:
    return f"a boolean ({str(value).lower()})" if isinstance(value, bool) else "a string"


def _no_bool_or_str(expected: str):
    # pydantic's lax mode reads true as 1 and "5" as 5; a client that sends those has a bug to
    # hear about. Floats stay lax: 10.0 is 10, and 1.5 is refused by int itself.
    def check(value: Any) -> Any:
        if isinstance(value, (bool, str, bytes)):
            raise ValueError(f"expected {expected}, got {_kind(value)}; send a JSON number such as 10")
        return value

    return BeforeValidator(check)


# Integer (and number) fields of request models: JSON numbers only, never booleans or strings.
Integer = Annotated[int, _no_bool_or_str("an integer")]
Number = Annotated[int | float, _no_bool_or_str("a number")]


def _encodable(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{what} holds an unpaired surrogate (\\u{ord(value[e.start]):04x}); send valid Unicode"
        ) from None
    return value


def _not_blank(value: str, what: str) -> str:
    _encodable(value, what)
    if not value.strip():
        raise ValueError(f"{what} is empty or only whitespace; send some text to search for")
    return value


class SearchRequest(BaseModel):
    """One query (``query``) or a batch (``queries``), ranked by ``method``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"query": "who founded the university", "k": 10, "method": "nci"}]},
    )

    query: str | None = Field(None, description="the query; give this or `queries`")
    queries: list[str] | None = Field(None, description="a batch of queries; give this or `query`")
    k: Integer = Field(10, ge=1, le=1000, description="results per query")
    method: str = Field(
        "nci",
        description="a registered method: nci, dense (exact inner product), pq (4-bit PQ), bm25, "
        "nci+dense (NCI's beam re-scored with dense similarity), ...; GET /v1/index lists them",
        json_schema_extra=_method_enum,
    )
    beam: Integer | None = Field(
        None,
        ge=1,
        le=1000,
        description="methods with a beam (nci, nci+dense): beam size (default max(k, 10); they "
        "return at most `beam` results)",
    )
    options: dict[str, Number] | None = Field(
        None,
        description='the method\'s other search options, e.g. {"rerank": 4} for pq or '
        '{"weight": 20} for nci+dense (GET /v1/index lists each method\'s options)',
    )
    snippets: bool = Field(True, description="include a text snippet per result")

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return _check_method(v)

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any] | None, info: Any) -> dict[str, Any] | None:
        if not v:
            return None
        if "beam" in v:
            raise ValueError("give the beam as the top-level `beam` field")
        method = info.data.get("method")
        if method is not None:
            get_method(method).parse_options(v)  # raises ValueError naming the bad option
        return v

    @field_validator("query")
    @classmethod
    def _query(cls, v: str | None) -> str | None:
        return None if v is None else _not_blank(v, "query")

    @field_validator("queries")
    @classmethod
    def _queries(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("queries is an empty list; send at least one query")
        for i, q in enumerate(v):
            _not_blank(q, f"queries[{i}]")
        return v

    @model_validator(mode="after")
    def _one_of(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of `query` (a string) or `queries` (a list of strings)")
        return self


class SearchHit(BaseModel):
    id: str
    score: float = Field(
        description="the method's score: log-probability for nci, inner product for dense "
        "and pq, BM25 score for bm25, log-probability + weight x cosine for nci+dense. A hit with "
        "source 'dense' (a document added since NCI was trained) has no log-probability: it shows "
        "the score of the NCI hit ranked just above it, so scores stay sorted"
    )
    title: str
    snippet: str | None = None
    source: str = Field(
        description="which ranking found it: the method, or 'dense' for documents added "
        "since the NCI model was trained (dense fallback)"
    )


class QueryResults(BaseModel):
    query: str
    results: list[SearchHit]


class SearchResponse(BaseModel):
    method: str
    k: int
    beam: int | None = None
    took_ms: float = Field(description="server time for the request, queueing included")
    results: list[SearchHit] | None = Field(None, description="for a single `query`")
    batch: list[QueryResults] | None = Field(None, description="for `queries`, in request order")


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(alias="_id", min_length=1, max_length=200, description="unique id, no whitespace")
    title: str = ""
    text: str = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        _encodable(v, "_id")
        if any(c.isspace() or not c.isprintable() for c in v):
            raise ValueError("document ids must not contain whitespace or control characters")
        return v

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        return _not_blank(v, "text")

    @field_validator("title")
    @classmethod
    def _title(cls, v: str) -> str:
        return _encodable(v, "title")


class AddDocumentsRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"documents": [{"_id": "doc-1", "title": "A title", "text": "Some text."}]}]
        },
    )

    documents: list[DocumentIn] = Field(min_length=1)


class AddedDocument(BaseModel):
    id: str
    semantic_id: str | None = Field(
        None, description="the id's digits joined by '-' (when the index has ids)"
    )


class AddDocumentsResponse(BaseModel):
    added: list[AddedDocument]
    documents: int = Field(description="live documents after the update")


class DocumentOut(BaseModel):
    id: str
    title: str
    text: str
    semantic_id: str | None
    added: bool = Field(description="added through the API since the index was built")
    trained: bool = Field(description="the NCI model was trained on this document's id")


class DeleteResponse(BaseModel):
    deleted: str
    documents: int


class IndexInfo(BaseModel):
    name: str = Field(description="the index directory's name")
    documents: int
    added: int
    deleted: int
    methods: dict[str, str | None] = Field(description="method -> null when available, else why not")
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="method -> its search options: {name: {type, default, help}}"
    )
    default_beam: int
    limits: dict[str, int]


class Status(BaseModel):
    status: str
    journal: int | None = Field(None, description="/readyz: the last live update applied here")


class ErrorResponse(BaseModel):
    detail: str = Field(description="what was wrong and what to do")
    errors: list[dict] | None = Field(None, description="each validation error, for programs")
