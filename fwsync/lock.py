"""One apply at a time: an advisory lock file, held for the whole read → apply."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_LOCK = Path(os.environ.get("FWSYNC_LOCK_FILE", "/run/fwsync.lock"))
DEFAULT_TIMEOUT = float(os.environ.get("FWSYNC_LOCK_TIMEOUT", "30"))


class LockTimeout(Exception):
    pass


@contextmanager
def exclusive(path: Path = DEFAULT_LOCK, timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise LockTimeout(
                        f"another fwsync holds {path} (pid {holder}); waited {timeout:.0f} s"
                    ) from None
                time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
