"""How plans and status look: text for people (styled by the caller), JSON for scripts. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fwsync import __version__
from fwsync.core.activity import Activity, Key, idle
from fwsync.core.build import build_ruleset
from fwsync.core.counts import RuleCount, by_origin
from fwsync.core.diff import Change, Plan
from fwsync.core.exposure_report import (
    ExposureReport,
    PortReport,
    Surprise,
    exposure_report,
    through_docker_proxy,
)
from fwsync.core.kernel_text import shown
from fwsync.core.networks import DirectRouting, direct_routing
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.core.port_decisions import Decision
from fwsync.core.ruleset import Ruleset
from fwsync.core.tallies import port_key
from fwsync.rules.model import Diagnostic, Policy
from fwsync.verify.impact import Impact

JSON_FORMAT_VERSION = 1
Style = Callable[[str, str], str]  # (text, colour name) → styled text
MAX_SHOWN = 25  # lines per object in text output; JSON always has all of them


def _plain(text: str, _colour: str) -> str:
    return text


_SIGNS = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red")}


def _change_lines(change: Change, style: Style) -> Iterable[str]:
    sign, colour = _SIGNS[change.op]
    yield style(f"  {sign} {change.key}", colour) + f"  ({change.op})"
    shown = 0
    removed = change.removed
    if change.not_listed:
        yield style("      - (its elements were not read: a set of 1,000 or more that a new set "
                    "replaces is deleted whole; `--full` lists them)", "red")
        removed = ()
    for mark, lines, col in (("-", removed, "red"), ("+", change.added, "green")):
        for line in lines:
            if shown == MAX_SHOWN:
                break
            yield style(f"      {mark} {line}", col)
            shown += 1
    hidden = len(change.added) + len(removed) - shown
    if hidden > 0:
        yield f"      ... and {hidden} more (see --format json)"


def plan_text(plan: Plan, reason: str, warnings: Iterable[Diagnostic] = (),
              style: Style = _plain) -> str:
    out = [f"Backend: {plan.backend} ({reason})"]
    out.extend(style(str(w), "yellow") for w in warnings)
    out.extend(style(f"Note: {n}", "yellow") for n in plan.notes)
    if plan.empty and plan.disagreements:
        out.append("")
        out.append(style("Drift that no change can mend:", "red") + " the kernel holds what "
                   "fwsync renders, but those rules give other verdicts than the policy:")
        out.extend(style(f"  ! {d}", "red") for d in plan.disagreements[:MAX_SHOWN])
        if len(plan.disagreements) > MAX_SHOWN:
            out.append(f"  ... and {len(plan.disagreements) - MAX_SHOWN} more "
                       "(see --format json)")
        return "\n".join(out)
    if plan.empty:
        out.append("")
        out.append(style("No changes.", "green") + " The kernel already matches the rules.")
        return "\n".join(out)
    out.append("")
    out.append("fwsync will make these changes to the kernel:")
    for change in plan.changes:
        out.extend(_change_lines(change, style))
    c = plan.counts
    out.append("")
    out.append(style("Plan:", "bold") +
               f" {c['add']} to add, {c['remove']} to remove, in {c['objects']} object(s).")
    return "\n".join(out)


def plan_json(plan: Plan, reason: str, warnings: Iterable[Diagnostic] = ()) -> dict[str, Any]:
    return {
        "format_version": JSON_FORMAT_VERSION,
        "backend": plan.backend,
        "backend_reason": reason,
        "changes": [_change_json(c) for c in plan.changes],
        "summary": plan.counts,
        "disagreements": list(plan.disagreements),
        "notes": list(plan.notes),
        "warnings": [w.as_dict() for w in warnings],
    }


def _change_json(c: Change) -> dict[str, Any]:
    if c.not_listed:
        return {"object": c.key, "action": c.op, "add": list(c.added), "remove": [],
                "not_listed": True}
    return {"object": c.key, "action": c.op, "add": list(c.added), "remove": list(c.removed)}


def _binding(port: PublishedPort) -> str:
    host = f"[{port.host_ip}]" if port.family == 6 else port.host_ip
    return f"{host}:{port.host_port}/{port.proto}"


def _decision_text(d: Decision) -> str:
    if d.action.startswith("audit "):
        # core/audit: counted and logged as what it would do, deciding nothing
        would = d.action.removeprefix("audit ")
        return f"AUDIT: would {would} {d.who}, decides nothing ({d.origin})"
    verb = {"allow": "allow", "limit": "limit", "deny": "deny", "reject": "reject"}[d.action]
    return f"{verb} {d.who} ({d.origin})"


def status_text(policy: Policy, docker: DockerState, enforced: str, in_sync: bool | None,
                style: Style = _plain, ruleset: Ruleset | None = None,
                gaps: Sequence[str] = (), report: ExposureReport | None = None) -> str:
    """`ruleset`: build_ruleset(policy, docker)'s when the caller has it (the plan's): one build
    per `status`, not one per section; `report`: exposure_report's for it, likewise. `gaps`:
    what fwsync does not govern here (core/networks.not_governed)."""
    out = [f"Enforcing: {enforced}"]
    if in_sync is not None:
        out.append("In sync with the rules: " + (
            style("yes", "green") if in_sync else style("no — run `fwsync plan`", "red")))
    # What fwsync does not govern here (core/networks.not_governed): said before anything else.
    out.extend(style(f"Not governed: {gap}", "yellow") for gap in gaps)
    if docker.error is not None:
        out.append(style(f"Docker could not be asked: {docker.error}", "yellow"))
        return "\n".join(out)
    if ruleset is None:
        ruleset = build_ruleset(policy, docker).ruleset
    report = report or exposure_report(policy, docker, ruleset)
    if not docker.ports:
        out.append("Docker publishes no ports.")
    else:
        out.append("")
        out.append("Published ports (who may connect, first matching rule first):")
    for row in report.ports:
        port = row.port
        out.append(f"  {_binding(port)} → {shown(port.owner)} ({port.image or '?'}), "
                   f"{port.target_word} {port.container_port}")
        for d in row.decisions:
            colour = "green" if d.action in ("allow", "limit") else (
                "yellow" if d.action.startswith("audit ") else "red")
            out.append("      " + style(_decision_text(d), colour))
        out.extend("      " + style(f"warning: {w.message}", "yellow") for w in row.surprises)
    if report.surprises:
        out.append("")
        out.append("Rules to look at:")
        out.extend("  " + style(f"{w.origin}: warning: {w.message}", "yellow")
                   for w in report.surprises)
    out.extend(direct_routing_lines(policy, docker, style, ruleset))
    return "\n".join(out)


def direct_routing_rows(policy: Policy, docker: DockerState, ruleset: Ruleset | None = None
                        ) -> tuple[DirectRouting, ...]:
    if ruleset is None:
        ruleset = build_ruleset(policy, docker).ruleset
    return direct_routing(ruleset, docker)


def direct_routing_lines(policy: Policy, docker: DockerState, style: Style = _plain,
                         ruleset: Ruleset | None = None) -> list[str]:
    """The networks where direct routing is not simply dropped, or Docker lets it in."""
    rows = direct_routing_rows(policy, docker, ruleset)
    if not rows and policy.protect_direct_routing:
        return []
    out = ["", "Direct routing (connections straight to a container's address, no published "
           "port):"]
    out.append("  fwsync drops it in every Docker network" + (
        " (protect direct-routing), except where it says below." if policy.protect_direct_routing
        else ": no — `protect direct-routing off`: your rules and the default decide."))
    for row in rows:
        where = f"{shown(row.network)} (IPv{row.family}, {shown(row.bridge)})"
        docker_says = f"Docker: {row.docker}; " if row.docker else ""
        if row.fwsync == "rules":
            why = f"{row.origin}: {row.why}" if row.origin else row.why
            verdict = style(f"your rules and the default decide ({why})", "green")
        else:
            verdict = style("fwsync drops it (protect direct-routing)", "yellow")
        out.append(f"  {where}: {docker_says}{verdict}")
    return out


def direct_routing_json(policy: Policy, docker: DockerState, ruleset: Ruleset | None = None
                        ) -> dict[str, Any]:
    return {"protected": policy.protect_direct_routing,
            "networks": [{"network": r.network, "bridge": r.bridge, "family": r.family,
                          "docker": r.docker or None, "fwsync": r.fwsync, "why": r.why,
                          "origin": r.origin}
                         for r in direct_routing_rows(policy, docker, ruleset)]}


def surprise_json(s: Surprise) -> dict[str, Any]:
    return {"kind": s.kind, "message": s.message, "origin": s.origin}


def status_json(policy: Policy, docker: DockerState, enforced: str, in_sync: bool | None,
                ruleset: Ruleset | None = None) -> dict[str, Any]:
    """`ruleset` as for status_text."""
    if ruleset is None:
        ruleset = build_ruleset(policy, docker).ruleset
    report = exposure_report(policy, docker, ruleset)
    return {
        "format_version": JSON_FORMAT_VERSION,
        "fwsync_version": __version__,
        "enforcing": enforced,
        "in_sync": in_sync,
        "docker_error": docker.error,
        "ports": [_port_json(row) for row in report.ports],
        "warnings": [surprise_json(w) for w in report.surprises],
        "direct_routing": direct_routing_json(policy, docker, ruleset),
    }


def _port_json(row: PortReport) -> dict[str, Any]:
    p = row.port
    return {
        "host_ip": p.host_ip, "host_port": p.host_port, "proto": p.proto,
        "container": p.container, "image": p.image, "container_port": p.container_port,
        "service": p.service or None, "mode": p.mode or None,
        "decisions": [{"action": d.action, "who": d.who, "origin": d.origin}
                      for d in row.decisions],
        "governed": row.governed,
        "routed": p.routed or None,
        "docker_proxy": through_docker_proxy(p),
        "warnings": [surprise_json(w) for w in row.surprises],
    }


COUNTS_HEAD = ("New connections decided, per rule (since fwsync first wrote it; a dropped "
               "client's retried SYN counts again):")


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return "under a minute"


def _ago(seconds: float) -> str:
    return "just now" if seconds < 60 else f"{_span(seconds)} ago"


def _last(activity: Mapping[Key, Activity], c: RuleCount, now: float) -> str:
    """When the daemon's samples last saw this count grow (core/activity)."""
    a = activity.get((c.origin, c.verdict))
    if a is None:
        return "-"
    if a.last is not None:
        return _ago(now - a.last)
    return f"before {_ago(now - a.since)}" if a.connections else f"none in {_span(now - a.since)}"


def counts_lines(counts: Sequence[RuleCount] | str, activity: Mapping[Key, Activity],
                 now: float) -> list[str]:
    """status' per-rule counts (`counts`: reconcile.rule_counts_now's, or why they could not
    be read), with when each last grew where the daemon sampled it (`activity`), and the
    rules that decided nothing for IDLE_DAYS as hints."""
    if isinstance(counts, str):
        return [f"Connections decided: could not be read: {counts}"]
    if not counts:
        return []
    width = max(len(c.origin) for c in counts)
    lines = [COUNTS_HEAD]
    for c in counts:
        last = f"  last: {_last(activity, c, now)}" if activity else ""
        lines.append(f"  {c.origin:<{width}}  {c.verdict:<6} {c.connections:>8}{last}  "
                     f"{shown(c.text)}")
    origins = {c.origin for c in counts}
    for origin, since in idle(activity, now):
        if origin in origins:
            lines.append(f"Hint: {origin} has decided no connection in {_span(now - since)} "
                         "(the daemon's samples): is it still needed?")
    if not activity:
        lines.append("(When each rule was last used: `fwsync daemon` samples it.)")
    return lines


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(
        timespec="seconds").replace("+00:00", "Z")


PORT_COUNTS_HEAD = "New connections decided, per published port (the rule or default, its count):"


def port_counts_lines(report: ExposureReport, ports: Mapping[tuple[str, str], int]
                      ) -> list[str]:
    """status' per-port counts (core/tallies, read by reconcile.counts_now): for each published
    binding, each of its decisions' count for that port."""
    lines = []
    for row in report.ports:
        key = _port_key(row.port)
        said = [f"{d.origin} {ports[(d.origin, key)]}" for d in row.decisions
                if (d.origin, key) in ports]
        if said:
            lines.append(f"  {_binding(row.port)} ({shown(row.port.owner)}): "
                         f"{', '.join(dict.fromkeys(said))}")
    return [PORT_COUNTS_HEAD, *lines] if lines else []


def _port_key(p: PublishedPort) -> str:
    return port_key(6 if p.family == 6 else 4, p.proto, p.host_port)


def counts_json(data: dict[str, Any], counts: Sequence[RuleCount] | str,
                activity: Mapping[Key, Activity], now: float,
                ports: Mapping[tuple[str, str], int] | None = None) -> None:
    """status' JSON with the counts: `rules` (per rule and verdict, with the daemon's samples
    of when each last grew), `idle_rules` (nothing decided for IDLE_DAYS), and `connections` on
    each port's decision: that port's (`connections_of` "port": core/tallies), else the rule's
    over all its ports and verdicts (`connections_of` "rule"; null where it has none, e.g. a
    merged run)."""
    if isinstance(counts, str):
        data["rules"], data["rules_error"] = None, counts
        return
    rows = []
    for c in counts:
        a = activity.get((c.origin, c.verdict))
        rows.append({"origin": c.origin, "rule": c.text, "verdict": c.verdict,
                     "connections": c.connections,
                     "last_connection": _iso(a.last) if a else None,
                     "sampled_since": _iso(a.since) if a else None})
    data["rules"] = rows
    origins = {c.origin for c in counts}
    data["idle_rules"] = [{"origin": o, "since": _iso(s)} for o, s in idle(activity, now)
                          if o in origins]
    per = by_origin(counts)
    for port in data.get("ports", []):
        key = port_key(6 if ":" in port.get("host_ip", "") else 4, port.get("proto", ""),
                       port.get("host_port", 0))
        for d in port["decisions"]:
            counted = (ports or {}).get((d["origin"], key))
            d["connections"] = counted if counted is not None else per.get(d["origin"])
            d["connections_of"] = "port" if counted is not None else "rule"


def impact_lines(impact: Impact | None, style: Style = _plain) -> list[str]:
    """`plan`'s section on real clients (verify/impact.py)."""
    if impact is None:
        return []
    head = style("Impact on recent clients:", "bold")
    if impact.unread is not None:
        return ["", f"{head} not known: {impact.unread}"]
    out = ["", f"{head} {impact.clients} client(s) with {impact.flows} tracked connection(s) "
               f"to published ports ({impact.evidence})."]
    if not impact.changes:
        out.append("  This plan changes the verdict for none of them.")
    for c in impact.changes:
        sign, colour = ("-", "red") if c.change == "refuses" else ("+", "green")
        port = _binding(c.binding)
        out.append(style(f"  {sign} {c.change} {c.source} → {c.dest}:{c.binding.host_port}/"
                         f"{c.binding.proto}", colour) +
                   f" ({shown(c.binding.owner)}, {port}): {c.connections} connection(s) tracked "
                   f"now; {c.before} now, {c.after} by {shown(c.origin)}")
    return out


def impact_json(impact: Impact | None) -> dict[str, Any] | None:
    if impact is None:
        return None
    if impact.unread is not None:
        return {"unread": impact.unread}
    return {"evidence": impact.evidence, "clients": impact.clients, "flows": impact.flows,
            "changes": [{"change": c.change, "source": str(c.source), "dest": str(c.dest),
                         "host_ip": c.binding.host_ip, "host_port": c.binding.host_port,
                         "proto": c.binding.proto, "container": c.binding.container,
                         "connections": c.connections, "before": c.before, "after": c.after,
                         "origin": c.origin} for c in impact.changes]}
