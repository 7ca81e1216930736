"""Where tools/fetch-promtool keeps promtool (Prometheus' rule checker, from Debian's
`prometheus` package) and where the tests look for it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PACKAGE = "prometheus"
SUITE = "bookworm"
MEMBER = "./usr/bin/promtool"  # the one file taken out of the package
STAMP = "VERSIONS"  # written last by tools/fetch-promtool: its presence means complete


def promtool_dir() -> Path:
    return Path(os.environ.get("FWSYNC_PROMTOOL_DIR") or "/var/cache/fwsync-promtool")


def fetched() -> Path | None:
    folder = promtool_dir()
    binary = folder / "promtool"
    return binary if (folder / STAMP).is_file() and binary.is_file() else None


def promtool_path() -> Path | None:
    """The fetched promtool, else one on PATH (a machine with Prometheus installed)."""
    found = fetched()
    if found is not None:
        return found
    on_path = shutil.which("promtool")
    return Path(on_path) if on_path else None
