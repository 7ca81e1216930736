"""Steps shared by the kernel and e2e tests that drive fwsync itself."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.lab import run_fwsync

REPO_RULES = Path(__file__).resolve().parent.parent / "rules"


def write_rules(tmp_path: Path, text: str, name: str = "10-test.rules") -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / name).write_text(text)
    return rules


def fwsync_ok(lab: Any, *args: str, rules: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    res = run_fwsync(lab, *args, rules=rules, env=env)
    assert res.returncode == 0, (
        f"fwsync {' '.join(args)} exited {res.returncode}\n{res.stderr}{res.stdout}")
    return res
