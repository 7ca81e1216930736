"""The `fwsync-check` pre-commit hook (.pre-commit-hooks.yaml), used as a rules repository uses it:
a git repo whose .pre-commit-config.yaml names fwsync's repository and a commit, `pre-commit
install`, then `git commit`. pre-commit builds the hook's environment itself, installing fwsync
from that commit with its dependencies from PyPI (~15 s here).

fwsync's repository is a throwaway one made from a copy of this working tree (what the next commit
would hold), so the test runs the hook as it is now, and never writes to this checkout's git.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.packaging.tools import REPO, copy_source, dev_bin, environ, need, run

pytestmark = pytest.mark.packaging

GOOD = """\
default deny incoming
define office 198.51.100.0/25, 2001:db8:1::/64
allow 80,443/tcp
"""
# Uses the set the other file defines: checked alone, this file would be wrong.
GOOD_TOO = "allow from $office to any port 5432 proto tcp\n"
BAD = "allow from $offce to any port 5432 proto tcp\n"


def git_env(tmp_path: Path) -> dict[str, str]:
    ident = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
             for what, value in (("NAME", "fwsync test"), ("EMAIL", "test@example.org"))}
    # Neither the machine's nor root's git config may change what happens here.
    return environ(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null",
                   PRE_COMMIT_HOME=str(tmp_path / "pre-commit-cache"), **ident)


def git(repo: Path, env: dict[str, str], *args: str, check: bool = True) -> str:
    res = run(["git", "-C", str(repo), *args], env=env, check=check)
    return res.stdout + res.stderr


def test_hook_passes_good_rules_and_stops_a_commit_with_bad_ones(tmp_path: Path) -> None:
    need("git")
    pre_commit = dev_bin("pre-commit")
    assert pre_commit.exists(), "pre-commit is in the dev extras: make install"
    env = git_env(tmp_path)

    hook_repo = copy_source(tmp_path / "fwsync")
    assert (hook_repo / ".pre-commit-hooks.yaml").exists()
    git(hook_repo, env, "init", "-q")
    git(hook_repo, env, "add", "-A")
    git(hook_repo, env, "commit", "-q", "-m", "fwsync as the working tree has it")
    rev = git(hook_repo, env, "rev-parse", "HEAD").strip()

    rules_repo = tmp_path / "rules-repo"
    (rules_repo / "rules").mkdir(parents=True)
    git(rules_repo, env, "init", "-q")
    (rules_repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n- repo: {hook_repo}\n  rev: {rev}\n  hooks:\n  - id: fwsync-check\n")
    (rules_repo / "rules" / "10-base.rules").write_text(GOOD)
    (rules_repo / "rules" / "20-db.rules").write_text(GOOD_TOO)
    run([pre_commit, "install"], cwd=rules_repo, env=env)

    started = time.monotonic()
    git(rules_repo, env, "add", "-A")
    out = git(rules_repo, env, "commit", "-m", "good rules")  # builds the hook's environment
    print(f"first commit (pre-commit installs fwsync) took {time.monotonic() - started:.1f}s")
    assert "fwsync check" in out and "Passed" in out, out

    (rules_repo / "README").write_text("no rules changed\n")
    git(rules_repo, env, "add", "README")
    out = git(rules_repo, env, "commit", "-m", "not a rules file")
    assert "(no files to check)Skipped" in out, out

    (rules_repo / "rules" / "20-db.rules").write_text(BAD)
    git(rules_repo, env, "add", "-A")
    head = git(rules_repo, env, "rev-parse", "HEAD")
    out = git(rules_repo, env, "commit", "-m", "a typo", check=False)
    assert "Failed" in out, out
    assert "rules/20-db.rules:1:12: error: unknown set '$offce'" in out, out
    assert git(rules_repo, env, "rev-parse", "HEAD") == head, "the bad commit must not be made"

    # The same hook run over a whole repository, as CI would (`pre-commit run --all-files`).
    res = run([pre_commit, "run", "--all-files"], cwd=rules_repo, env=env, check=False)
    assert res.returncode == 1 and "unknown set '$offce'" in res.stdout, res.stdout


def test_hook_definition_matches_what_the_cli_accepts() -> None:
    import yaml

    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "fwsync-check"
    assert hook["entry"] == "fwsync check"
    # `fwsync check` takes one path, and a directory's files only make sense together.
    assert hook["pass_filenames"] is False
    assert hook["args"] == ["rules"]
