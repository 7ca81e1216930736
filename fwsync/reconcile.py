"""The one path from rules on disk to a Plan, shared by the CLI (and later the daemon).

rules ──load──▶ Policy ─┐
Docker ──observe──▶ DockerState ─┼─▶ build ─▶ Ruleset ─▶ backend.render ─┐
kernel ──backend.read────────────────────────────────────────────────────┴─▶ diff ─▶ Plan
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fwsync.backends.base import Backend, BackendError
from fwsync.backends.iptables import IptablesBackend
from fwsync.core.build import build_ruleset
from fwsync.core.diff import Plan, diff
from fwsync.core.observed import DockerState
from fwsync.observe.docker import observe_docker
from fwsync.rules.load import load_rules
from fwsync.rules.model import Diagnostic, Policy

BACKENDS = ("auto", "iptables", "nftables")


class RulesInvalid(Exception):
    def __init__(self, diagnostics: tuple[Diagnostic, ...]) -> None:
        super().__init__(f"{sum(d.severity == 'error' for d in diagnostics)} error(s) in rules")
        self.diagnostics = diagnostics


@dataclass(frozen=True)
class Planned:
    policy: Policy
    docker: DockerState
    plan: Plan
    backend_reason: str
    warnings: tuple[Diagnostic, ...]


def select_backend(name: str) -> Backend:
    if name in ("auto", "iptables"):
        return IptablesBackend()
    if name == "nftables":
        raise BackendError(
            "the nftables backend is not available in this version; use --backend iptables"
        )
    raise BackendError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


def load_policy(rules: Path) -> tuple[Policy, tuple[Diagnostic, ...]]:
    result = load_rules(rules)
    if not result.ok or result.policy is None:
        raise RulesInvalid(result.diagnostics)
    return result.policy, result.diagnostics


def make_plan(rules: Path, backend: Backend, docker: DockerState | None = None) -> Planned:
    """Everything is read before anything could be written: an invalid rules file stops here."""
    policy, warnings = load_policy(rules)
    reason = backend.detect()
    observed = docker if docker is not None else observe_docker()
    built = build_ruleset(policy, observed)
    current = backend.read()
    desired = backend.render(built.ruleset)
    plan = diff(backend.name, desired, current, notes=built.notes)
    return Planned(policy=policy, docker=observed, plan=plan, backend_reason=reason,
                   warnings=warnings)
