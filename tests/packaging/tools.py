"""What the packaging tests share: the project's source as a commit would hold it, commands run
with their output kept for the failure message, and the gate for tools they need."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.lab import in_ci

REPO = Path(__file__).resolve().parents[2]
# Debian's interpreter, the one a fresh host has (and whose dist-packages hold python3-nftables).
SYSTEM_PYTHON = "/usr/bin/python3"
# The files a build reads: the top-level files and the package. Not the whole tree: other
# directories (test beds, VM images) can be large and have nothing to do with the package.
SOURCE_PATHSPECS = (":(glob)*", ":(glob)fwsync/**")


def need(*tools: str, root: bool = False) -> None:
    """Skip without the tools, but fail under CI=true, where a skip would hide a broken machine."""
    missing = [t for t in tools if shutil.which(t) is None]
    if root and os.geteuid() != 0:
        missing.append("root (for a network namespace of its own)")
    if not missing:
        return
    msg = "packaging test needs: " + ", ".join(missing)
    if in_ci():
        pytest.fail(msg + " (CI=true: this test may not skip)", pytrace=False)
    pytest.skip(msg)


def source_files() -> list[str]:
    """What `git add -A` would commit of the build's files: tracked and new, never ignored."""
    res = run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
               "--exclude-standard", "--", *SOURCE_PATHSPECS])
    return sorted(p for p in set(res.stdout.split("\0")) if p and (REPO / p).is_file())


def copy_source(dest: Path) -> Path:
    for name in source_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return dest


def run(cmd: Sequence[str | Path], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
        timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; with `check`, a non-zero exit fails the test with everything it said."""
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=dict(env) if env else None,
                         capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {res.returncode}\n"
                    f"--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}", pytrace=False)
    return res


def environ(**changes: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(changes)
    return env


def dev_bin(name: str) -> Path:
    """A console script of the venv the tests run in (fwsync, pre-commit)."""
    return Path(sys.executable).parent / name
