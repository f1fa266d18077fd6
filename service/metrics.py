"""Prometheus metrics of one application instance (its own registry, so apps do not collide)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# The *_created timestamp series double the output and say nothing a scraper needs.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "nci_http_requests",
            "HTTP requests by route, verb and status",
            ["route", "verb", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "nci_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.search_requests = Counter(
            "nci_search_requests", "search requests by method", ["method"], registry=r
        )
        self.search_queries = Counter(
            "nci_search_queries", "queries searched by method", ["method"], registry=r
        )
        self.search_latency = Histogram(
            "nci_search_latency_seconds",
            "search request latency by method (queueing included)",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_queries = Histogram(
            "nci_search_batch_queries",
            "queries per batched search call",
            ["method"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.updates = Counter("nci_document_updates", "acknowledged document updates", ["op"], registry=r)
        self.documents = Gauge("nci_index_documents", "live documents in the index", registry=r)
        self.added = Gauge(
            "nci_index_added_documents", "documents added since the index was built", registry=r
        )
        self.deleted = Gauge(
            "nci_index_deleted_documents", "documents of the built index deleted since", registry=r
        )
        self.index_bytes = Gauge(
            "nci_index_bytes", "bytes on disk of what each method loads", ["method"], registry=r
        )
        self.log_records = Gauge(
            "nci_update_log_records", "update log records since the last snapshot", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
