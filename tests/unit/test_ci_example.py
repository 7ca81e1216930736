"""examples/rules-repo: its CI files parse, every fwsync command they run is one the CLI accepts
(parsed by the CLI's own parser, options and choices included), its rules are valid, and its
pre-commit config names a hook this repository provides."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from fwsync.cli import app
from fwsync.rules.load import load_rules

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "rules-repo"
GITHUB = EXAMPLE / ".github" / "workflows" / "fwsync.yml"
GITLAB = EXAMPLE / ".gitlab-ci.yml"
# An fwsync invocation inside a shell line: up to a redirection, pipe, `||`/`&&` or the end.
# typer's parser is click (vendored by newer typers, so not necessarily the `click` package);
# BadParameter derives from its UsageError either way.
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__
                                   if c.__name__ == "UsageError")
FWSYNC_CALL = re.compile(r"(?:^|[\s;&|(])fwsync(?P<args>(?:[^|>;&\n\\]|\\\n)*)")


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def github_scripts() -> dict[str, str]:
    jobs = load(GITHUB)["jobs"]
    return {f"{job}[{i}]": step["run"] for job, spec in jobs.items()
            for i, step in enumerate(spec["steps"]) if "run" in step}


def gitlab_scripts() -> dict[str, str]:
    return {f"{job}[{i}]": line for job, spec in load(GITLAB).items()
            if isinstance(spec, dict) and "script" in spec
            for i, line in enumerate(spec["script"])}


def fwsync_calls(script: str) -> list[list[str]]:
    return [shlex.split(m.group("args").replace("\\\n", " ")) for m in FWSYNC_CALL.finditer(script)]


def parse_with_the_cli(args: list[str]) -> str:
    """Let the CLI's own parser (click, under typer) read the arguments without running anything;
    a usage error (unknown command or option, bad choice) raises. Returns the subcommand."""
    group: Any = typer.main.get_command(app)
    name, *rest = args
    command = group.get_command(typer.Context(group), name)
    if command is None:
        raise UsageError(f"no such command {name!r}")
    command.make_context(name, rest)
    return name


def test_github_workflow_checks_on_pull_requests_and_plans_on_the_host() -> None:
    workflow = load(GITHUB)
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers is not None
    assert "pull_request" in triggers
    jobs = workflow["jobs"]
    assert jobs["check"]["runs-on"] == "ubuntu-latest"
    assert "self-hosted" in jobs["plan"]["runs-on"]
    assert "fork" not in jobs["plan"]["if"] and "head.repo.full_name" in jobs["plan"]["if"]


@pytest.mark.parametrize("scripts", [github_scripts, gitlab_scripts], ids=["github", "gitlab"])
def test_every_fwsync_command_in_ci_is_one_the_cli_accepts(scripts: Any) -> None:
    calls = [(where, args) for where, script in scripts().items()
             for args in fwsync_calls(script)]
    used = {parse_with_the_cli(args) for _, args in calls}
    assert used == {"check", "plan"}
    plans = [args for _, args in calls if args[0] == "plan"]
    assert any("--detailed-exitcode" in a and "json" in a for a in plans), plans


def test_the_cli_parser_would_catch_a_wrong_command() -> None:
    # What the test above relies on: a wrong option or choice is a usage error.
    with pytest.raises(UsageError):
        parse_with_the_cli(["plan", "--format", "yaml"])
    with pytest.raises(UsageError):
        parse_with_the_cli(["plan", "--detailed-exit-code"])
    with pytest.raises(UsageError):
        parse_with_the_cli(["chek", "rules"])


def test_example_rules_are_valid_without_warnings() -> None:
    result = load_rules(EXAMPLE / "rules")
    assert result.ok and result.policy is not None, [str(d) for d in result.diagnostics]
    assert result.diagnostics == ()
    assert set(result.policy.sets) == {"office", "blocked", "monitoring"}


def test_example_pre_commit_config_names_this_repositorys_hook() -> None:
    hooks = {h["id"] for h in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())}
    config = load(EXAMPLE / ".pre-commit-config.yaml")
    used = {h["id"] for repo in config["repos"] for h in repo["hooks"]}
    assert used <= hooks
