"""How the exposure report (`status` on a terminal) and `explain` look: a rich table for people,
plain text when piped, JSON for scripts. Pure apart from writing to the Console it is given."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from fwsync.core.explain import Decided, Explanation
from fwsync.core.exposure_report import ExposureReport, binding_text
from fwsync.core.kernel_text import shown
from fwsync.core.observed import DockerState
from fwsync.core.ruleset import Ruleset
from fwsync.present import JSON_FORMAT_VERSION, Style, direct_routing_lines
from fwsync.rules.model import Policy


def _plain(text: str, _colour: str) -> str:
    return text


_ACTION_STYLE = {"allow": "green", "limit": "green", "deny": "red", "reject": "red"}


def _short_origin(origin: str) -> str:
    """FILE:LINE with the file's name only: the table has no room for the rules directory,
    which is the one given with --rules (the plain and JSON output keep the whole path)."""
    return origin.rsplit("/", 1)[-1]


# Below this many columns the warnings go under the table: five columns don't fit.
WARNINGS_COLUMN_MIN_WIDTH = 110


def status_table(report: ExposureReport, warnings_column: bool = True) -> Table:
    table = Table(title="Published ports", title_justify="left", show_lines=True,
                  expand=False, header_style="bold")
    table.add_column("Published", overflow="fold")
    table.add_column("Container", overflow="fold")
    table.add_column("Who may connect (first match first)")
    table.add_column("Rule", overflow="fold")
    if warnings_column:
        table.add_column("Warnings", style="yellow", min_width=20)
    for row in report.ports:
        p = row.port
        who = Text()
        rule = Text()
        for i, d in enumerate(row.decisions):
            end = "\n" if i < len(row.decisions) - 1 else ""
            who.append(f"{d.action} ", style=_ACTION_STYLE.get(d.action, ""))
            who.append(d.who + end)
            rule.append(_short_origin(d.origin) + end)
        if not row.governed:
            who.append("\n(bypasses fwsync: the host firewall decides)", style="yellow")
        container = Text(shown(p.owner))
        container.append(f"\n{p.image}" if p.image else "", style="dim")
        container.append(f"\n{'target ' if p.target_word != 'container port' else ''}"
                         f"port {p.container_port}", style="dim")
        warnings = "\n".join(f"• {w.message}" for w in row.surprises)
        published = binding_text(p)
        if row.surprises and not warnings_column:
            published += f"\n({len(row.surprises)} warning{'s' if len(row.surprises) > 1 else ''})"
        cells: list[str | Text] = [published, container, who, rule]
        if warnings_column:
            cells.append(warnings)
        table.add_row(*cells)
    return table


def print_status(console: Console, report: ExposureReport, docker: DockerState, enforced: str,
                 in_sync: bool | None, daemon_lines: Iterable[str],
                 policy: Policy | None = None, ruleset: Ruleset | None = None) -> None:
    """`fwsync status` on a terminal."""
    console.print(Text.assemble(("Enforcing: ", "bold"), enforced))
    if in_sync is not None:
        console.print(Text.assemble(("In sync with the rules: ", "bold"),
                                    ("yes", "green") if in_sync
                                    else ("no — run `fwsync plan`", "red")))
    if docker.error is not None:
        console.print(Text(f"Docker could not be asked: {docker.error}", style="yellow"))
    elif not report.ports:
        console.print("Docker publishes no ports.")
    else:
        wide = console.width >= WARNINGS_COLUMN_MIN_WIDTH
        console.print(status_table(report, warnings_column=wide))
        if not wide and any(row.surprises for row in report.ports):
            console.print(Text("Warnings:", style="bold"))
            for row in report.ports:
                for w in row.surprises:
                    console.print(Text(f"  {binding_text(row.port)}: {w.message}",
                                       style="yellow"))
    if report.surprises:
        console.print(Text("Rules to look at:", style="bold"))
        for w in report.surprises:
            console.print(Text(f"  {w.origin}: warning: {w.message}", style="yellow"))
    if policy is not None:
        for line in direct_routing_lines(policy, docker, ruleset=ruleset):
            console.print(Text(line))
    console.print(Group(*(Text(line) for line in daemon_lines)))


# -- explain -----------------------------------------------------------------------------------

_OUTCOME_WORDS = {
    "allow": "allowed", "limit": "allowed, rate-limited (limit)", "deny": "denied (dropped)",
    "reject": "rejected", "not-published": "not published", "depends": "depends on the address",
    "not-governed": "not governed by fwsync", "unknown": "unknown (Docker could not be asked)",
}


def _decided_text(d: Decided) -> str:
    return f"{d.action} by {d.origin}: {d.rule}"


def _unless_lines(d: Decided, indent: str) -> list[str]:
    return [f"{indent}unless {u.when}: {u.action} by {u.origin}: {u.rule}" for u in d.unless] + [
        f"{indent}AUDIT{f' ({u.when})' if u.when else ''}: {u.origin} would {u.action} "
        f"({u.rule}); audited, it decides nothing" for u in d.audited]


def agrees(rules_say: str, kernel: str) -> bool:
    from fwsync.verify.agree import agrees as kernel_agrees

    return kernel_agrees(rules_say, kernel)


def _kernel_line(rules_say: str, kernel: str) -> str:
    if agrees(rules_say, kernel):
        return f"the kernel's rules agree: {kernel}"
    return f"the kernel's rules say otherwise: {kernel} (the policy: {rules_say})"


def explain_text(e: Explanation, style: Style = _plain, kernel: Sequence[str] | None = None,
                 unread: str | None = None) -> str:
    """`kernel`: what fwsync's objects as the kernel lists them do, per reached binding
    (fwsync.verify.answer); `unread`: why the kernel was not asked."""
    colour = _ACTION_STYLE.get(e.outcome, "yellow")
    out = [f"{e.connection}: " + style(_OUTCOME_WORDS[e.outcome], colour)]
    for i, r in enumerate(e.reaches):
        p = r.binding
        out.append(f"  reaches {binding_text(p)} → {shown(p.owner)} ({p.image or '?'}), "
                   f"{p.target_word} {p.container_port}")
        prefix = "    fwsync's rules would say: " if not r.governed else "    "
        out.append(prefix + style(_decided_text(r.decided),
                                  _ACTION_STYLE.get(r.decided.action, "")))
        out.extend(_unless_lines(r.decided, "      "))
        if kernel is not None and r.governed:
            said = _kernel_line(r.decided.action, kernel[i])
            out.append("    " + style(said, "" if agrees(r.decided.action, kernel[i])
                                      else "red"))
    if unread is not None and e.reaches:
        out.append(style(f"  the kernel was not read ({unread})", "yellow"))
    if not e.reaches:
        out.append("  if it were published: " + _decided_text(e.if_published))
        out.extend(_unless_lines(e.if_published, "    "))
    out.extend(style(f"  note: {n}", "yellow") for n in e.notes)
    return "\n".join(out)


def _decided_json(d: Decided) -> dict[str, Any]:
    return {"action": d.action, "origin": d.origin, "rule": d.rule,
            "unless": [{"action": u.action, "origin": u.origin, "rule": u.rule, "when": u.when}
                       for u in d.unless],
            "audited": [{"action": u.action, "origin": u.origin, "rule": u.rule, "when": u.when}
                        for u in d.audited]}


def explain_json(e: Explanation, kernel: Sequence[str] | None = None,
                 unread: str | None = None) -> dict[str, Any]:
    c = e.connection
    decided = e.decided
    return {
        "format_version": JSON_FORMAT_VERSION,
        "connection": {"source": str(c.source), "family": c.family, "port": c.port,
                       "proto": c.proto, "to": str(c.to) if c.to is not None else None},
        "verdict": e.outcome,
        "origin": decided.origin if decided else None,
        "rule": decided.rule if decided else None,
        "published": None if e.outcome == "unknown" else bool(e.reaches),
        "reaches": [
            {"host_ip": r.binding.host_ip, "host_port": r.binding.host_port,
             "proto": r.binding.proto, "container": r.binding.container,
             "image": r.binding.image, "container_port": r.binding.container_port,
             "service": r.binding.service or None, "mode": r.binding.mode or None,
             "governed": r.governed, "routed": r.binding.routed or None,
             "docker_proxy": r.docker_proxy, "decided": _decided_json(r.decided),
             "kernel": kernel[i] if kernel is not None else None}
            for i, r in enumerate(e.reaches)
        ],
        "kernel_unread": unread,
        "if_published": _decided_json(e.if_published),
        "notes": list(e.notes),
    }
