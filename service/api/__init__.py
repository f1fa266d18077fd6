"""HTTP routers, one per resource: search, documents, health (health checks, metrics, index info)."""
