"""`fwsync status` builds the desired ruleset once (the plan's) and shows every section from it:
at 10k set entries a build is ~12 ms, and status built it three times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import fwsync.cli
import fwsync.core.build
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.reconcile import Planned, load_policy, plan_policy

from .test_daemon_reconciler import MemoryBackend

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_status_builds_the_ruleset_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        fmt: str) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "10.rules").write_text(
        "default deny incoming\nallow from 198.51.100.0/25 to any port 5432\n")
    monkeypatch.setenv("FWSYNC_DAEMON_STATE", str(tmp_path / "daemon.json"))
    docker = DockerState(ports=(PublishedPort("0.0.0.0", 5432, "tcp", "db", 5432),))
    backend = MemoryBackend()  # a kernel in a dict: no kernel here
    real = fwsync.core.build.build_ruleset
    builds: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        builds.append(1)
        return real(*args, **kwargs)

    for module in ("fwsync.core.build", "fwsync.reconcile", "fwsync.present",
                   "fwsync.core.exposure_report"):
        monkeypatch.setattr(f"{module}.build_ruleset", counted)

    def planned(rules: Path, _backend: Any, full: bool = False) -> Planned:
        policy, warnings = load_policy(rules)
        return plan_policy(policy, docker, backend, warnings)

    monkeypatch.setattr(fwsync.cli, "_plan", planned)
    res = CliRunner().invoke(fwsync.cli.app, ["status", "--rules", str(tmp_path / "rules"),
                                              "--format", fmt])
    assert res.exit_code == 0, res.output
    assert "5432" in res.output
    assert len(builds) == 1, f"{len(builds)} builds"
