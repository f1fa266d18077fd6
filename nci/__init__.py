"""nci: a Neural Corpus Indexer, where a sequence-to-sequence model is the retrieval index."""

__version__ = "0.1.0"
