"""One devstack per state directory: an OS file lock, not a pid file.

The OS releases the lock when its process ends, so a stack that crashed never
leaves a stale lock behind. flock on Linux and macOS; msvcrt on Windows, where
a locked byte range can't even be read, so the owner's pid goes in a file of
its own. (The suite runs on Linux only: the Windows branch is untested.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

if sys.platform == "win32":
    import msvcrt

    def _try_lock(handle: IO[str]) -> bool:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # one byte, past the (empty) end
        except OSError:
            return False
        return True

    def _unlock(handle: IO[str]) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(handle: IO[str]) -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(handle: IO[str]) -> None:
        fcntl.flock(handle, fcntl.LOCK_UN)


class StateDirLock:
    """`devstack.lock` (held) and `devstack.pid` (who holds it) in `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.lock_path = state_dir / "devstack.lock"
        self.pid_path = state_dir / "devstack.pid"
        self._handle: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock if no other process holds it; never waits."""
        handle = open(self.lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        if not _try_lock(handle):
            handle.close()
            return False
        self._handle = handle
        self.pid_path.write_text(str(os.getpid()), encoding="utf-8")
        return True

    def owner(self) -> str:
        """The pid of the process holding the lock, as far as it is known."""
        try:
            return self.pid_path.read_text(encoding="utf-8").strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        self.pid_path.unlink(missing_ok=True)
        _unlock(handle)
        handle.close()
