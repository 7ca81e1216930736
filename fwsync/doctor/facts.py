"""What `fwsync doctor` finds: its findings, their severities, and the report. What it
observed of the host is fwsync/core/facts.py's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["info", "warning", "serious"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "serious")  # mildest first

Details = Mapping[str, str | int | float | list[str]]


@dataclass(frozen=True)
class Finding:
    check: str  # a CHECKS id
    severity: Severity
    subject: str  # what it is about: a port binding, a container, an image, the host
    message: str  # what is wrong and why it matters
    fix: str  # what to do about it
    details: Details = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]
    checks: tuple[str, ...]  # the checks that ran
    skipped: Mapping[str, str]  # check id → why it did not run

    def count(self, severity: Severity) -> int:
        return sum(f.severity == severity for f in self.findings)

    @property
    def worst(self) -> Severity | None:
        found = {f.severity for f in self.findings}
        return next((s for s in reversed(SEVERITIES) if s in found), None)

    def at_least(self, severity: Severity) -> bool:
        worst = self.worst
        return worst is not None and SEVERITIES.index(worst) >= SEVERITIES.index(severity)
