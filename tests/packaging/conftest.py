"""One wheel per session, built from a copy of the source the way pip builds it for a user."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.packaging.tools import copy_source, run


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fwsync's wheel. Built from a copy so that the build's own droppings (build/, egg-info)
    never land in the shared working tree."""
    base = tmp_path_factory.mktemp("wheel")
    src = copy_source(base / "src")
    started = time.monotonic()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-q", "-w", base / "dist", src])
    print(f"wheel built in {time.monotonic() - started:.1f}s")
    (built,) = (base / "dist").glob("fwsync-*.whl")
    return built
