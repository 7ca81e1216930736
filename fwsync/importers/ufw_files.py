"""The I/O around the ufw importer: read ufw's files, write the generated rules file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from fwsync.importers.ufw import UfwFiles
from fwsync.readfile import read_limited

USER_RULES, USER6_RULES, UFW_CONF = "user.rules", "user6.rules", "ufw.conf"


class ImportFilesError(Exception):
    """A file could not be read or written; the message is one line for the user."""


def read_ufw_files(ufw_dir: Path, default_file: Path) -> UfwFiles:
    """user.rules must be there; the others are optional (the importer notes what is missing)."""
    user = _read(ufw_dir / USER_RULES, required=True)
    assert user is not None
    return UfwFiles(
        user_rules=user, user_rules_name=str(ufw_dir / USER_RULES),
        user6_rules=_read(ufw_dir / USER6_RULES), user6_rules_name=str(ufw_dir / USER6_RULES),
        defaults=_read(default_file), defaults_name=str(default_file),
        ufw_conf=_read(ufw_dir / UFW_CONF), ufw_conf_name=str(ufw_dir / UFW_CONF))


MAX_UFW_FILE_BYTES = 16 << 20  # ufw's own files; a real user.rules is a few kB


def _read(path: Path, required: bool = False) -> str | None:
    try:
        return read_limited(path, MAX_UFW_FILE_BYTES, "a ufw file").decode("utf-8", "replace")
    except FileNotFoundError:
        if not required:
            return None
        raise ImportFilesError(f"cannot read {path}: no such file; point --ufw-dir at a "
                               "directory holding ufw's user.rules (default /etc/ufw)") from None
    except OSError as exc:
        raise ImportFilesError(f"cannot read {path}: {exc.strerror or exc}") from None


def write_rules_file(path: Path, text: str, force: bool) -> None:
    """Write whole or not at all (a temporary file renamed over the target); an existing file is
    replaced only with `force`, since it may be hand-written rules."""
    if path.is_dir():
        raise ImportFilesError(f"--output {path} is a directory: give a file name, "
                               f"e.g. {path / '10-ufw.rules'}")
    if path.exists() and not force:
        raise ImportFilesError(f"--output {path} exists; nothing was written (--force replaces "
                               "it)")
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise ImportFilesError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ImportFilesError(f"cannot write {path}: {exc.strerror or exc}") from None
