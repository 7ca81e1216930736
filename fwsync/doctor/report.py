"""How a doctor report looks: text for people (styled by the caller), JSON for scripts. Pure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fwsync.doctor.facts import SEVERITIES, Report

FORMAT_VERSION = 1
Style = Callable[[str, str], str]  # (text, colour name) → styled text
_COLOUR = {"serious": "red", "warning": "yellow", "info": "blue"}


def _plain(text: str, _colour: str) -> str:
    return text


def report_text(report: Report, style: Style = _plain) -> str:
    out: list[str] = []
    for f in report.findings:
        out.append(style(f"{f.severity}", _COLOUR[f.severity]) + f" [{f.check}] {f.subject}")
        out.append(f"    {f.message}")
        out.append(f"    fix: {f.fix}")
    for check, why in sorted(report.skipped.items()):
        out.append(style("skipped", "bold") + f" [{check}] {why}")
    if out:
        out.append("")
    counts = ", ".join(f"{report.count(s)} {s}" for s in reversed(SEVERITIES))
    verdict = (style("No problems found.", "green") if not report.findings
               else style("Serious problems found.", "red") if report.worst == "serious"
               else "Nothing serious.")
    out.append(f"{verdict} {len(report.checks)} checks ran: {counts}.")
    return "\n".join(out)


def report_json(report: Report) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "worst": report.worst,
        "summary": {s: report.count(s) for s in reversed(SEVERITIES)},
        "checks": list(report.checks),
        "skipped": [{"check": k, "reason": v} for k, v in sorted(report.skipped.items())],
        "findings": [
            {"check": f.check, "severity": f.severity, "subject": f.subject,
             "message": f.message, "fix": f.fix, "details": dict(f.details)}
            for f in report.findings
        ],
    }
