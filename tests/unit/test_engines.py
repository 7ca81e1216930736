"""The engine matrix's plumbing: which engines a run selects, what counts as the right daemon
version, and tools/fetch-engines' two promises that need no archive: a cached engine is not
fetched again (the archive is not even asked), and an unreachable archive is one clear error
that leaves nothing that looks complete."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import engines
from tests.engines import ENGINES, STAMP, select

pytestmark = pytest.mark.unit

FETCH = Path(__file__).resolve().parents[2] / "tools" / "fetch-engines"
# Nothing listens on the discard port of the loopback: connection refused at once.
NOWHERE = "http://127.0.0.1:9/debian"


def test_select_default_env_option_and_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FWSYNC_ENGINE", raising=False)
    assert [e.name for e in select()] == [engines.DEFAULT_ENGINE] == ["20.10"]
    monkeypatch.setenv("FWSYNC_ENGINE", "28.5")
    assert [e.name for e in select()] == ["28.5"]
    assert [e.name for e in select(["26.1", "28.5,26.1"])] == ["26.1", "28.5"]  # option wins
    assert [e.name for e in select(["all"])] == ["20.10", "26.1", "28.5"]
    with pytest.raises(ValueError, match=r"unknown Docker engine '29\.0'.*20\.10, 26\.1, 28\.5"):
        select(["29.0"])


def test_version_match_is_by_release_not_by_prefix() -> None:
    e = ENGINES["28.5"]
    assert e.matches("28.5.2") and e.matches("28.5")
    assert not e.matches("28.50.1") and not e.matches("28.4.0") and not e.matches("")
    assert ENGINES["20.10"].matches("20.10.24+dfsg1")


def test_facts_per_engine() -> None:
    old, mid, new = ENGINES["20.10"], ENGINES["26.1"], ENGINES["28.5"]
    assert (old.ip6_docker_user, mid.ip6_docker_user, new.ip6_docker_user) == (False, True, True)
    assert [e.docker_forward_chain for e in (old, mid, new)] == [False, False, True]
    assert [e.reports_firewall_backend for e in (old, mid, new)] == [False, False, True]
    assert [e.test_id for e in (old, new)] == ["docker-20.10", "docker-28.5"]
    assert old.bin_dir() is None and old.is_fetched()  # the machine's own: nothing to fetch


def _fetch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FWSYNC_ENGINES_DIR": str(tmp_path), "FWSYNC_DEBIAN_MIRROR": NOWHERE}
    return subprocess.run([sys.executable, str(FETCH), *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_fetch_skips_cached_engines_without_asking_the_archive(tmp_path: Path) -> None:
    for name in ("26.1", "28.5"):
        (tmp_path / name).mkdir()
        (tmp_path / name / STAMP).write_text("docker.io x\n")
    res = _fetch(tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Docker 26.1, 28.5 cached in" in res.stdout
    assert not (tmp_path / "apt").exists()  # the archive was never asked


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs Debian's apt-get")
def test_fetch_fails_clearly_when_the_archive_is_unreachable(tmp_path: Path) -> None:
    (tmp_path / "26.1").mkdir()
    (tmp_path / "26.1" / STAMP).write_text("docker.io x\n")
    res = _fetch(tmp_path)
    assert res.returncode == 1
    assert f"cannot reach Debian's archive at {NOWHERE}" in res.stderr
    assert not (tmp_path / "28.5").exists()  # nothing half-fetched that looks complete
    assert (tmp_path / "26.1" / STAMP).is_file()  # and the cached one untouched


def test_fetch_rejects_an_unknown_engine(tmp_path: Path) -> None:
    res = _fetch(tmp_path, "19.03")
    assert res.returncode == 2 and "unknown Docker engine '19.03'" in res.stderr
