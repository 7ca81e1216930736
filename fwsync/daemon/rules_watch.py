"""Noticing that the rules changed: file watching (inotify, through watchfiles), a fingerprint
checked on every drift tick as a safety net (a watcher can miss changes: NFS, a directory
created after start, and the `define NAME file PATH` lists, wherever they are), and SIGHUP
(wired in service.py) for anything else.

The parent directory is watched, not the path itself: editors and configuration tools replace
files by renaming a new one over them, and a rules directory may itself be swapped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from fwsync.daemon.coalesce import Trigger
from fwsync.rules.load import SUFFIX

log = logging.getLogger("fwsync.daemon")

Fingerprint = tuple[tuple[str, int, int, int], ...]


def relevant(rules: Path, changed: Path) -> bool:
    """Does a change at `changed` concern the rules at `rules` (a file, or a directory of
    *.rules files)? Dotfiles and other names are left out, as the loader leaves them out."""
    if changed == rules:
        return True
    if changed.parent != rules:
        return False
    return changed.name.endswith(SUFFIX) and not changed.name.startswith(".")


def fingerprint(rules: Path, lists: Iterable[Path] = ()) -> Fingerprint:
    """What the loader would read, as (name, size, mtime, inode) — cheap to compare. `lists`
    are the `define NAME file PATH` files the last good policy read: wherever they live, a
    change to one is seen at the next drift tick."""
    try:
        files = sorted(p for p in rules.iterdir() if relevant(rules, p)) if rules.is_dir() \
            else [rules]
    except OSError:
        files = []
    found = []
    for f in [*files, *lists]:
        try:
            st = f.stat()
        except OSError:
            continue
        found.append((str(f), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(found)


async def watch_rules(rules: Path, emit: Callable[[Trigger], None],
                      stop: asyncio.Event) -> None:
    """Emit a `rules` trigger for every batch of changes under the rules path, until `stop`."""
    import watchfiles  # inotify through the Rust `notify` crate; only the daemon needs it

    rules = rules.absolute()
    parent = rules.parent
    while not stop.is_set():
        if not parent.is_dir():
            log.warning("cannot watch %s (no such directory); checking the rules on every "
                        "drift tick and on SIGHUP instead", parent)
            return
        try:
            async for changes in watchfiles.awatch(
                    parent, watch_filter=lambda _c, p: relevant(rules, Path(p)),
                    recursive=rules.is_dir() or not rules.exists(), stop_event=stop, step=30,
                    debounce=500):
                names = sorted({Path(p).name for _c, p in changes})
                emit(Trigger(source="rules", reason="changed: " + ", ".join(names),
                             at=time.monotonic(), wall=time.time()))
        except (OSError, RuntimeError) as exc:  # the watcher's own errors (e.g. directory gone)
            log.warning("watching %s failed (%s); watching again in 1 s", parent, exc)
            await asyncio.sleep(1)
