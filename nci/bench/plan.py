"""Which configurations ``nci bench`` measures, read from the method registry: each method
declares its own variants (NCI one per beam, pq with and without re-ranking, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nci.retrieval import get_method

if TYPE_CHECKING:
    from nci.bench.run import BenchConfig


def method_plan(config: BenchConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """(result key, index method, retriever options) for every measured configuration."""
    plan: list[tuple[str, str, dict[str, Any]]] = []
    for method in config.methods:
        spec = get_method(method)  # ValueError naming the registered methods
        plan += [(key, method, opts) for key, opts in spec.bench_plan(config)]
    return plan
