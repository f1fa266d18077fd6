"""One writer per live state: an exclusive lock on the updates directory.

The first process that opens an index's live updates for writing takes ``LOCK`` in the updates
directory (``flock``, released by the kernel when the process dies, SIGKILL included) and writes
who holds it. A second writer is refused at once, before it reads or writes anything, with a
message naming the holder: two writers would each acknowledge updates the other cannot see, and
one of them would be lost at the next start. Readers (``nci search``, ``nci updates info``) take
no lock: they replay the journal without writing.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from nci.manifest import ArtifactError

LOCK = "LOCK"


class LiveStateLocked(ArtifactError):
    """Another process holds the live state for writing."""


def describe_holder(info: dict) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    what = info.get("what") or " ".join(info.get("argv", []))
    return f"pid {info.get('pid')} on {info.get('host')} since {when} ({what})"


class WriterLock:
    def __init__(self, directory: str | Path, what: str | None = None):
        self.path = Path(directory) / LOCK
        self.what = what
        self._file: Any = None  # an open file object: closing it (or its collection) unlocks

    def acquire(self) -> None:
        """Take the lock or raise :class:`LiveStateLocked` naming the holder (never waits)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+b")  # noqa: SIM115 (held open as long as the lock)
        fd = f.fileno()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder(fd)
            f.close()
            raise LiveStateLocked(
                f"{self.path.parent}: the live updates of this index are held by {holder}. Stop that "
                "process first, or give this one its own updates directory (--updates / "
                "NCI_UPDATES_DIR); to read without writing, use `nci search` or `nci updates info`."
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
            "argv": sys.argv,
            "what": self.what,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self._file = f

    @staticmethod
    def _read_holder(fd: int) -> str:
        try:
            return describe_holder(json.loads(os.pread(fd, 65536, 0) or b"{}"))
        except (OSError, ValueError):
            return "another process"

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None
