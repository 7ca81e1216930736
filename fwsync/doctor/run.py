"""The doctor's one path: rules and facts in, a Report out (shared by the CLI and tests)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from fwsync.backends.base import BackendError
from fwsync.core.enforcing import Enforcement, nothing_held
from fwsync.doctor.checks import Rules, diagnose
from fwsync.doctor.facts import Report
from fwsync.observe.host_facts import PROC, gather_host_facts
from fwsync.rules.load import load_rules


def read_rules(path: Path) -> Rules:
    """The policy, or in a few words why there is none (doctor reports it, it doesn't stop)."""
    result = load_rules(path)
    if result.ok and result.policy is not None:
        return Rules(policy=result.policy, path=str(path))
    errors = [d for d in result.diagnostics if d.severity == "error"]
    problem = str(errors[0]) if len(errors) == 1 else f"{len(errors)} errors in {path}"
    return Rules(policy=None, problem=problem, path=str(path))


def doctor_report(rules: Path, *, ignore: Collection[str] = (), sample_seconds: float = 1.0,
                  proc: Path = PROC, client: Any = None) -> Report:
    """Raises DockerUnreachable (fwsync.observe.host_facts) when Docker can't be asked."""
    facts = gather_host_facts(client=client, proc=proc,
                              sample_seconds=0 if "docker-proxy-cpu" in ignore
                              else sample_seconds)
    if "not-enforcing" not in ignore:
        facts = replace(facts, enforcement=read_enforcement(rules))
    return diagnose(facts, read_rules(rules), ignore)


def read_enforcement(rules: Path | None = None) -> Enforcement | None:
    """The kernel's answer for the backend that holds fwsync's objects (`held` False: there
    are none), or None when the kernel could not be read. With valid `rules`, the answer status
    gives (reconcile.planned_enforcement): reached, and the kernel's rules giving the policy's
    verdicts; else whether they are reached."""
    from fwsync.reconcile import RulesInvalid, make_plan, planned_enforcement, select_backend

    if rules is not None:
        try:
            return planned_enforcement(make_plan(rules))
        except (RulesInvalid, BackendError):
            pass  # reported by their own checks; reachability is still worth asking
    try:
        backend = select_backend("auto")
        backend.detect()
        return backend.enforcement() if backend.holds() else nothing_held(backend.name)
    except BackendError:
        return None
