"""Reading a file that a user or the environment names, safely: only a regular file, never
blocking, never more than a limit. (A named pipe given as a rules path hung every command
forever; /dev/zero as an address list would have filled memory.) And writing the state fwsync
keeps (what Docker reported, when rules were last used) so that a reader never sees half."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path
from typing import Any


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """A regular file's bytes, at most `limit` of them; OSError (with a strerror that says what
    is wrong) otherwise. Opened without blocking and checked before reading: a named pipe given
    as a rules path hung every command forever, /dev/zero would never end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({_kind(info.st_mode)})")
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes, fwsync's limit for "
                                   f"{what}")
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a plain file"


def read_json_object(path: Path, limit: int, what: str) -> dict[str, Any] | None:
    """A JSON object from a small file fwsync writes (its state, its records); None when the
    file is missing, unreadable, too big or not one object."""
    try:
        data = json.loads(read_limited(path, limit, what))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: object) -> OSError | None:
    """`data` as JSON in `path`, written whole to a temporary file beside it and renamed over,
    so a reader never sees half of it; the error when it cannot be written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return exc
    return None
