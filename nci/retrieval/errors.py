"""Errors of live additions and deletions (the service maps them to 4xx answers)."""

from __future__ import annotations


class UpdateError(ValueError):
    """An update that cannot be applied; the subclass says why."""


class DocumentExists(UpdateError):
    """Adding a document whose id is already live."""


class DocumentNotFound(UpdateError, KeyError):
    """An unknown or already deleted document id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class IdSpaceFull(UpdateError):
    """No free digit is left anywhere in the docid trie."""
