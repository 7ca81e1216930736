"""tools/fetch-promtool's promises that need no archive: a cached promtool is not fetched
again, and an unreachable archive is one clear line with nothing half-fetched left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.promtool import STAMP

pytestmark = pytest.mark.unit

FETCH = Path(__file__).resolve().parents[2] / "tools" / "fetch-promtool"
NOWHERE = "http://127.0.0.1:9/debian"  # the discard port: refused at once


def _fetch(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FWSYNC_PROMTOOL_DIR": str(folder), "FWSYNC_DEBIAN_MIRROR": NOWHERE}
    return subprocess.run([sys.executable, str(FETCH)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_a_cached_promtool_is_not_fetched_again(tmp_path: Path) -> None:
    (tmp_path / "promtool").write_text("#!/bin/sh\n")
    (tmp_path / STAMP).write_text("prometheus x\n")
    res = _fetch(tmp_path)
    assert res.returncode == 0, res.stderr
    assert "promtool cached in" in res.stdout
    assert not (tmp_path / "apt").exists()  # the archive was never asked


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs Debian's apt-get")
def test_an_unreachable_archive_is_one_clear_line(tmp_path: Path) -> None:
    res = _fetch(tmp_path / "cache")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach Debian's archive at {NOWHERE}" in lines[0], \
        res.stderr
    assert not (tmp_path / "cache" / STAMP).exists()
    assert not (tmp_path / "cache" / "promtool").exists()
    assert not (tmp_path / "cache" / "apt").exists()
