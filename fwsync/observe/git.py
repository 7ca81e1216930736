"""The git commit a rules directory is checked out at, for the daemon's fwsync_rules_info.

Read from the repository's files (HEAD, the ref it names, packed-refs), not by running git: a
host that pulls its rules need not have git installed, a repository owned by another user
makes git refuse as root ("dubious ownership"), and a few small reads cost far less than a
process on every reconcile. Anything unexpected is an answer of "" (not in a repository, or
none that can be read), never an error: the commit is a label, not something to enforce.
"""

from __future__ import annotations

import re
from pathlib import Path

from fwsync.readfile import read_limited

_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 repositories
_SMALL = 4096  # HEAD, a loose ref, a `.git` file, commondir
_PACKED_REFS = 4 << 20  # a repository with tens of thousands of tags; beyond that: unknown


def head_commit(rules: Path) -> str:
    """The commit HEAD names in the repository holding `rules` (a directory or a file); "" when
    there is none."""
    try:
        gitdir = _find_gitdir(rules.resolve())
        if gitdir is None:
            return ""
        return _resolve_head(gitdir)
    except (OSError, UnicodeDecodeError, ValueError):
        return ""


def _read(path: Path, limit: int = _SMALL) -> str:
    return read_limited(path, limit, "a git file").decode("ascii").strip()


def _find_gitdir(start: Path) -> Path | None:
    """The git directory of the working tree `start` is in: the nearest `.git` above it, a
    directory, or a file (`gitdir: PATH`, a linked worktree or a submodule)."""
    here = start if start.is_dir() else start.parent
    for folder in (here, *here.parents):
        dot = folder / ".git"
        if dot.is_dir():
            return dot
        if dot.is_file():
            text = _read(dot)
            if not text.startswith("gitdir: "):
                return None
            return (folder / text.removeprefix("gitdir: ")).resolve()
    return None


def _resolve_head(gitdir: Path) -> str:
    head = _read(gitdir / "HEAD")
    if _OBJECT_ID.fullmatch(head):
        return head  # detached
    ref = head.removeprefix("ref: ")
    if ref == head or not ref.startswith("refs/") or ".." in ref.split("/"):
        return ""
    # A linked worktree keeps its own HEAD; branches live in the main repository's directory.
    common = gitdir
    if (gitdir / "commondir").is_file():
        common = (gitdir / _read(gitdir / "commondir")).resolve()
    for folder in dict.fromkeys((gitdir, common)):
        if (folder / ref).is_file():
            loose = _read(folder / ref)
            return loose if _OBJECT_ID.fullmatch(loose) else ""
    return _packed(common, ref)


def _packed(common: Path, ref: str) -> str:
    try:
        text = _read(common / "packed-refs", _PACKED_REFS)
    except FileNotFoundError:
        return ""  # an unborn branch: a repository with no commit yet
    for line in text.splitlines():
        oid, _, name = line.partition(" ")
        if name == ref and _OBJECT_ID.fullmatch(oid):
            return oid
    return ""
