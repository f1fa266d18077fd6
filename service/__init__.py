"""The nci retrieval service: a FastAPI application over one index directory (``nci serve``)."""
