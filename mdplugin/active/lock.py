"""One process at a time in a run folder: an exclusive lock that dies with its process.

:class:`RunLock` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``RUN_DIR/.lock`` and writes its
process id there. The operating system drops the lock when the process ends in any way (SIGKILL
included), so a killed run never leaves a folder locked, while a second ``mdplugin active`` (or
``mdplugin ipi --active``) started in the same folder while the first one runs — even before the
first one's first label, when the folder holds only ``config.json`` — stops with a one-line error
naming the holder instead of taking the folder over.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import ConfigError

__all__ = ["LOCK_NAME", "RunLock"]

#: name of the lock file inside a run folder
LOCK_NAME = ".lock"


class RunLock:
    """Exclusive lock on a run folder (see the module docstring); a context manager.

    ``acquire()`` creates the folder when needed and raises :class:`ConfigError` when another
    process holds the lock; ``release()`` (or leaving the ``with`` block, or the process ending)
    frees it. The lock file itself stays: it holds no state, only the last holder's pid.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            who = f" (process {holder})" if holder.isdigit() else ""
            raise ConfigError(f"{self.dir}: another mdplugin process{who} is using this run folder; wait for it "
                              f"to end (or stop it), then resume with --resume {self.dir}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
