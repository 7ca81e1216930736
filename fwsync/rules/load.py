"""Reading rules from disk: the rules language's only I/O. Problems are Diagnostics, not raises."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from fwsync.readfile import read_limited
from fwsync.rules.limits import (
    MAX_LIST_FILE_BYTES,
    MAX_RULES_FILE_BYTES,
    MAX_TOTAL_BYTES,
    count,
)
from fwsync.rules.model import Diagnostic
from fwsync.rules.shadow import shadowed
from fwsync.rules.syntax import ParseResult, parse_sources, quoted

SUFFIX = ".rules"


class _Budget:
    """What the files of one rule set may add up to (limits.MAX_TOTAL_BYTES)."""

    def __init__(self) -> None:
        self.left = MAX_TOTAL_BYTES

    def take(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise OSError(errno.EFBIG, f"the rule set's files add up to more than "
                                       f"{count(MAX_TOTAL_BYTES)} bytes, fwsync's limit")


def load_rules(path: Path) -> ParseResult:
    """Parse one rules file, or a directory's `*.rules` files in lexical order as if they were one
    file; when that is valid, add the warnings for rules an earlier rule shadows."""
    files = _rules_files(path)
    if isinstance(files, Diagnostic):
        return ParseResult(policy=None, diagnostics=(files,))
    budget = _Budget()
    sources: list[tuple[str, str]] = []
    problems: list[Diagnostic] = []
    for display, file in files:
        text = _read_text(display, file, budget)
        if isinstance(text, Diagnostic):
            problems.append(text)
        else:
            sources.append((display, text))
    if problems:
        # Parsing the others would report every `$NAME` of a set the unread file defines.
        return ParseResult(policy=None, diagnostics=tuple(problems))

    lists: dict[str, str] = {}

    def read_list_counted(list_path: str) -> str:
        lists[list_path] = read_list(list_path, budget)
        return lists[list_path]

    result = parse_sources(sources, read_list_counted)
    if not result.ok or result.policy is None:
        return result
    base = path if path.is_dir() else path.parent
    named = [(Path(display).name, text) for display, text in sources]
    listed = [(_beside(Path(name), base), text) for name, text in lists.items()]
    policy = replace(result.policy, digest=rules_digest(named, listed))
    order = {display: index for index, (display, _) in enumerate(sources)}
    diagnostics = sorted([*result.diagnostics, *shadowed(result.policy)],
                         key=lambda d: (order.get(d.file, len(order)), d.line, d.col))
    return ParseResult(policy=policy, diagnostics=tuple(diagnostics))


def rules_digest(rules: Iterable[tuple[str, str]], lists: Iterable[tuple[str, str]] = ()
                 ) -> str:
    """sha256 over what was read: each rules file by its name (not its directory: the same
    rules kept elsewhere on another host are the same rules) and each `define ... file` list
    by its name beside them (_beside), in sorted order. Every part is length-prefixed, so no two
    different sets of files hash alike by moving bytes between names and contents."""
    digest = hashlib.sha256()
    for kind, parts in (("rules", rules), ("list", lists)):
        for name, text in sorted(parts):
            for part in (kind, name, text):
                data = part.encode()
                digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def _beside(list_path: Path, base: Path) -> str:
    """A list's name for the digest: relative to the rules when it is kept with them (so a
    rules repository checked out anywhere hashes alike), else its path."""
    try:
        return str(list_path.relative_to(base))
    except ValueError:
        return str(list_path)


def read_list(path: str, budget: _Budget | None = None) -> str:
    """The callback for `define NAME file PATH`: the parser reports OSError and decode errors."""
    data = read_limited(Path(path), MAX_LIST_FILE_BYTES, "an address list")
    if budget is not None:
        budget.take(len(data))
    return data.decode("utf-8")


def _rules_files(path: Path) -> list[tuple[str, Path]] | Diagnostic:
    if not path.is_dir():
        return [(str(path), path)]
    try:
        # Dotfiles are left out as the shell's `*.rules` leaves them out (editor lock files).
        names = sorted(p.name for p in path.iterdir()
                       if p.name.endswith(SUFFIX) and not p.name.startswith(".")
                       and not p.is_dir())
    except OSError as e:
        return _problem(str(path), f"cannot read directory {quoted(path.name)}: "
                                   f"{e.strerror or e}")
    if not names:
        return _problem(str(path), f"no '*{SUFFIX}' files in directory {quoted(path.name)}")
    return [(str(path / name), path / name) for name in names]


def _read_text(display: str, file: Path, budget: _Budget) -> str | Diagnostic:
    try:
        data = read_limited(file, MAX_RULES_FILE_BYTES, "a rules file")
        budget.take(len(data))
    except OSError as e:
        return _problem(display, f"cannot read {quoted(file.name)}: {e.strerror or e}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        start = data.rfind(b"\n", 0, e.start) + 1
        line = data.count(b"\n", 0, e.start) + 1
        col = len(data[start:e.start].decode("utf-8").removeprefix("\ufeff")) + 1
        return _problem(display, f"not UTF-8 text: byte {quoted(f'0x{data[e.start]:02x}')} "
                                 "cannot be decoded", line, col)


def _problem(file: str, message: str, line: int = 1, col: int = 1) -> Diagnostic:
    """A problem with a whole file is put at its start, where an editor can jump to."""
    return Diagnostic(file=file, line=line, col=col, severity="error", message=message)
