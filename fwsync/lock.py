"""One apply at a time: an advisory lock file, held for the whole read → apply."""

from __future__ import annotations

import fcntl
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_LOCK = Path(os.environ.get("FWSYNC_LOCK_FILE", "/run/fwsync.lock"))
DEFAULT_TIMEOUT = 30.0


class LockError(Exception):
    """fwsync's lock could not be taken: the message says why."""


class LockTimeout(LockError):
    pass


def lock_timeout() -> float:
    """FWSYNC_LOCK_TIMEOUT, checked when it is needed (a bad value was a traceback at import)."""
    text = os.environ.get("FWSYNC_LOCK_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise LockError(f"FWSYNC_LOCK_TIMEOUT={text[:40]!r} is not a number of seconds "
                        "(0 or more)")
    return value


@contextmanager
def exclusive(path: Path = DEFAULT_LOCK, timeout: float | None = None) -> Iterator[None]:
    wait = lock_timeout() if timeout is None else timeout
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - closed below, after the lock is released
    except OSError as exc:
        raise LockError(f"cannot open fwsync's lock file {path}: {exc.strerror or exc} "
                        "(FWSYNC_LOCK_FILE)") from None
    with handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise LockTimeout(
                        f"another fwsync holds {path} (pid {holder}); waited {wait:.0f} s"
                    ) from None
                time.sleep(0.1)
            except OSError as exc:
                raise LockError(f"cannot lock {path}: {exc.strerror or exc}") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        except OSError:
            pass  # the pid is only for the message another fwsync shows; the lock is held
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
