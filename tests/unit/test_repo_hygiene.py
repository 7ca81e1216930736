"""The CI guard `tools/check-tracked` (run by .ci/run before and after the tests): it must fail
on a tracked file that .gitignore ignores, and on a run that leaves the clone dirty."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
GUARD = REPO / "tools" / "check-tracked"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org",
                    *args], check=True, capture_output=True)


def guard(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GUARD), str(repo), *args], capture_output=True, text=True,
                          check=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.fail("git is needed (tools/dev installs it)")
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text(".venv/\n__pycache__/\n")
    (tmp_path / "kept.py").write_text("x = 1\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "start")
    return tmp_path


def test_a_clean_repository_passes(repo: Path) -> None:
    assert guard(repo).returncode == 0
    assert guard(repo, "--clean").returncode == 0


def test_a_tracked_ignored_file_fails_and_is_named(repo: Path) -> None:
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").write_text("")
    assert guard(repo).returncode == 0  # ignored and untracked: fine
    git(repo, "add", "-f", ".venv/bin/python")
    git(repo, "commit", "-q", "-m", "oops")
    res = guard(repo)
    assert res.returncode == 1
    assert ".venv/bin/python" in res.stderr


def test_clean_fails_on_what_a_run_left_behind(repo: Path) -> None:
    (repo / "droppings.log").write_text("")
    res = guard(repo, "--clean")
    assert res.returncode == 1
    assert "droppings.log" in res.stderr
    (repo / "droppings.log").unlink()
    (repo / "kept.py").write_text("x = 2\n")
    assert guard(repo, "--clean").returncode == 1


def test_this_checkout_tracks_nothing_it_ignores() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist)")
    res = guard(REPO)
    assert res.returncode == 0, res.stderr


def test_ci_lints_before_it_tests() -> None:
    """.ci/run runs `make lint` (through tools/dev, which runs `make install` first, so a clean
    clone has ruff and mypy) before the test suite, between the two checks of the clone."""
    commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    steps = [c for c in commands if c.startswith(("tools/dev", "tools/check-tracked", "make"))]
    assert steps == ["tools/check-tracked .", "tools/dev lint", "tools/dev test",
                     "tools/check-tracked . --clean"], steps
    dev = (REPO / "tools" / "dev").read_text()
    assert "make install\nexec make \"${1:-test}\"" in dev, "tools/dev installs, then the target"
    assert "\nlint: install\n" in (REPO / "Makefile").read_text()
