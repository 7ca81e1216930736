"""fwsync.observe.git: the commit a rules directory is checked out at (fwsync_rules_info's
`commit`), read from git's files, checked against git itself in real repositories."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fwsync.observe.git import head_commit

pytestmark = pytest.mark.unit


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t",
                           "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")  # make install installs it; CI has it
    root = tmp_path / "fleet-rules"
    (root / "rules").mkdir(parents=True)
    git(root, "init", "-q")
    (root / "rules" / "10.rules").write_text("allow 80/tcp\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "first")
    return root


def test_a_branch_a_detached_head_and_packed_refs(repo: Path) -> None:
    rules = repo / "rules"
    assert head_commit(rules) == git(repo, "rev-parse", "HEAD")
    assert head_commit(rules / "10.rules") == git(repo, "rev-parse", "HEAD")
    (rules / "20.rules").write_text("allow 443/tcp\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "second")
    git(repo, "pack-refs", "--all")  # the branch now lives in packed-refs only
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert head_commit(rules) == git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "HEAD~1")
    assert head_commit(rules) == git(repo, "rev-parse", "HEAD")


def test_a_linked_worktree(repo: Path, tmp_path: Path) -> None:
    git(repo, "worktree", "add", "-q", "-b", "canary", str(tmp_path / "canary"))
    (tmp_path / "canary" / "rules" / "30.rules").write_text("allow 22/tcp\n")
    git(tmp_path / "canary", "add", ".")
    git(tmp_path / "canary", "commit", "-qm", "canary")
    assert head_commit(tmp_path / "canary" / "rules") == \
        git(tmp_path / "canary", "rev-parse", "HEAD") != git(repo, "rev-parse", "HEAD")


def test_outside_a_repository_or_unreadable_is_empty(repo: Path, tmp_path: Path) -> None:
    lone = tmp_path / "lone" / "rules"
    lone.mkdir(parents=True)
    assert head_commit(lone) == ""
    assert head_commit(tmp_path / "missing") == ""
    git(repo, "checkout", "-q", "--orphan", "unborn")  # a branch with no commit yet
    assert head_commit(repo / "rules") == ""
    (repo / ".git" / "HEAD").write_text("ref: refs/../../../etc/passwd\n")
    assert head_commit(repo / "rules") == ""
    (repo / ".git" / "HEAD").write_text("garbage\n")
    assert head_commit(repo / "rules") == ""
    (repo / ".git" / "HEAD").unlink()
    assert head_commit(repo / "rules") == ""
