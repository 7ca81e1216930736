"""The command line (typer): parse options, call the core, print, map errors to exit codes."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

# Each command imports what it needs when it runs: `fwsync check` (the pre-commit hook) reads
# rules and needs neither the backends nor Docker's SDK nor the daemon. Start-up is measured
# by `make bench`.
if TYPE_CHECKING:
    from fwsync.reconcile import Planned, RulesInvalid

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    help="Declarative, UFW-style firewall rules for the ports Docker publishes.",
    pretty_exceptions_enable=False,
)

DEFAULT_RULES = Path("/etc/fwsync/rules")


def _print_version(value: bool) -> None:
    if value:
        from fwsync import __version__

        typer.echo(f"fwsync {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print fwsync's version and exit.")] = False,
) -> None:
    """Declarative, UFW-style firewall rules for the ports Docker publishes."""


class Format(StrEnum):
    text = "text"
    json = "json"


class BackendName(StrEnum):
    auto = "auto"
    iptables = "iptables"
    nftables = "nftables"


RulesOpt = Annotated[Path, typer.Option("--rules", envvar="FWSYNC_RULES",
                                        help="Rules file or directory of *.rules files.")]
BackendOpt = Annotated[BackendName, typer.Option("--backend", envvar="FWSYNC_BACKEND",
                                                 help="Which kernel interface to write.")]
FormatOpt = Annotated[Format, typer.Option("--format", help="Output for people or scripts.")]


def _style(text: str, colour: str) -> str:
    if colour == "bold":
        return typer.style(text, bold=True)
    return typer.style(text, fg=colour)


def _fail(message: str) -> NoReturn:
    typer.echo(typer.style("error: ", fg="red") + message, err=True)
    raise typer.Exit(1)


def _print_diagnostics(exc: RulesInvalid) -> NoReturn:
    for d in exc.diagnostics:
        typer.echo(_style(str(d), "red" if d.severity == "error" else "yellow"), err=True)
    _fail(f"{exc}; nothing was changed")


FullOpt = Annotated[bool, typer.Option(
    "--full", help="Read every element of every set from the kernel (slow for big sets): "
                   "finds an element added or removed by hand in a set whose name says it is "
                   "unchanged. Without it, such a set is known by its name (and, with "
                   "iptables, its element count).")]


def _plan(rules: Path, backend: BackendName, full: bool = False) -> Planned:
    from fwsync.backends.base import BackendError
    from fwsync.reconcile import RulesInvalid, make_plan

    try:
        return make_plan(rules, backend.value, full=full)
    except RulesInvalid as exc:
        _print_diagnostics(exc)
    except BackendError as exc:
        _fail(f"{exc}; nothing was changed")  # planning only reads


def _emit_json(data: dict[str, Any]) -> None:
    import json

    typer.echo(json.dumps(data, indent=2, sort_keys=False))


@app.command()
def check(
    rules_arg: Annotated[Path | None, typer.Argument(metavar="[RULES]",
                                                     help="Defaults to --rules.")] = None,
    rules: RulesOpt = DEFAULT_RULES,
    fmt: FormatOpt = Format.text,
) -> None:
    """Parse and validate rules; print FILE:LINE:COL: error|warning: ... per problem."""
    from fwsync.rules.load import load_rules

    path = rules_arg or rules
    result = load_rules(path)
    if fmt is Format.json:
        _emit_json({"valid": result.ok,
                    "diagnostics": [d.as_dict() for d in result.diagnostics]})
    else:
        for d in result.diagnostics:
            typer.echo(_style(str(d), "red" if d.severity == "error" else "yellow"))
        if result.ok and result.policy is not None:
            p = result.policy
            typer.echo(f"{path}: OK ({len(p.rules)} rules, {len(p.sets)} sets, "
                       f"default {p.default})")
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def plan(
    rules: RulesOpt = DEFAULT_RULES,
    backend: BackendOpt = BackendName.auto,
    fmt: FormatOpt = Format.text,
    detailed_exitcode: Annotated[bool, typer.Option(
        "--detailed-exitcode", help="Exit 0 when there is nothing to do, 2 when there is."),
    ] = False,
    full: FullOpt = False,
) -> None:
    """Show what `apply` would change in the kernel."""
    from fwsync.backends.base import BackendError
    from fwsync.present import impact_json, impact_lines, plan_json, plan_text
    from fwsync.reconcile import planned_impact

    planned = _plan(rules, backend, full)
    if not planned.plan.empty:
        try:
            planned.backend.check(planned.plan)
        except BackendError as exc:
            _fail(f"this plan would fail to apply: {exc}")
    # Which real clients (tracked by the kernel now) the change refuses or admits.
    impact = planned_impact(planned)
    if fmt is Format.json:
        data = plan_json(planned.plan, planned.backend_reason, planned.warnings)
        data["impact"] = impact_json(impact)
        _emit_json(data)
    else:
        typer.echo(plan_text(planned.plan, planned.backend_reason, planned.warnings, _style))
        if lines := impact_lines(impact, _style):
            typer.echo("\n".join(lines))
    if planned.refusal is not None:
        _fail(f"apply would refuse this plan: {planned.refusal}")
    if detailed_exitcode and not planned.plan.in_sync:
        raise typer.Exit(2)


@app.command()
def apply(
    rules: RulesOpt = DEFAULT_RULES,
    backend: BackendOpt = BackendName.auto,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Don't ask (never asked when stdin "
                                                          "is not a terminal).")] = False,
    full: FullOpt = False,
    confirm_within: Annotated[int | None, typer.Option(
        "--confirm-within", metavar="SECONDS", min=1, max=86400,
        help="Put back what the kernel held before unless `fwsync confirm` is run within "
             "SECONDS (a timer that outlives this shell; docs/rolling-out.md).")] = None,
) -> None:
    """Make the kernel match the rules, in one transaction per address family."""
    from dataclasses import replace

    from fwsync import lock
    from fwsync.backends.base import BackendError
    from fwsync.core.audit import audit_problem
    from fwsync.core.diff import diff
    from fwsync.core.enforcing import disagreement_problems
    from fwsync.present import impact_lines, plan_text
    from fwsync.reconcile import (
        all_backends,
        apply_planned,
        check_enforced,
        planned_impact,
        remember_enforced,
    )
    from fwsync.rollout.pending import Pending, release_hold
    from fwsync.rollout.revert import arm, disarm, pending_refusal
    from fwsync.rollout.timer import TimerError

    armed: Pending | None = None
    try:
        with lock.exclusive():
            if (refusal := pending_refusal()) is not None:
                _fail(f"{refusal}; nothing was changed")
            planned = _plan(rules, backend, full)
            chosen = planned.backend
            typer.echo(plan_text(planned.plan, planned.backend_reason, planned.warnings, _style))
            if lines := impact_lines(planned_impact(planned), _style):
                typer.echo("\n".join(lines))
            if planned.plan.empty:
                _remember(remember_enforced(planned.docker))
                if planned.plan.disagreements:
                    # Nothing to write would change what the kernel does: the renderers'
                    # output itself says something else than the policy.
                    _fail("the kernel holds the rules fwsync renders for this policy, yet they "
                          "give other verdicts than the policy ("
                          f"{'; '.join(disagreement_problems(planned.plan.disagreements))}): "
                          "a fault in fwsync's rendering, please report it; nothing was "
                          "changed")
                if confirm_within is not None:
                    typer.echo("Nothing to change, so nothing to confirm.")
                return
            if planned.refusal is None and sys.stdin.isatty() and not yes \
                    and not typer.confirm("\nApply these changes?"):
                _fail("cancelled; nothing was changed")
            if confirm_within is not None and planned.refusal is None:
                try:  # the timer runs before anything is written (rollout/revert.py)
                    armed = arm(all_backends(), chosen.name, rules,
                                planned.policy.digest, confirm_within)
                except (OSError, TimerError) as exc:
                    _fail(f"cannot arm the revert: {exc}; nothing was changed")
            try:
                apply_planned(planned)
            except BackendError:
                if armed is not None:  # a failed apply changed nothing: nothing to revert
                    disarm(armed)
                raise
            if armed is None:
                release_hold()  # the daemon may apply rules it held off after a revert
            kept = remember_enforced(planned.docker)
            held = chosen.read(planned.plan.desired)
            after = diff(chosen.name, planned.plan.desired, held)
            # Whether they are enforced is the kernel's answer, read back now (under the lock:
            # fwsync writes nothing in between), not a consequence of the write succeeding.
            assert planned.ruleset is not None
            reach = check_enforced(chosen, planned.ruleset, planned.docker, held)
    except lock.LockError as exc:
        _fail(f"{exc}; nothing was changed")
    except BackendError as exc:
        _fail(str(exc))
    # Audit mode is what the rules asked for: said loudly, not a failure (core/audit).
    audit_only = bool(reach.audited) and replace(reach, audited=()).enforcing
    if reach.enforcing:
        typer.echo(_style("\nApplied.", "green") + " fwsync's rules are enforced.")
    elif audit_only:
        typer.echo(_style("\nApplied, NOT ENFORCED", "yellow") + f": {audit_problem(reach.audited)}"
                   "; `fwsync log --would-deny` shows what they would refuse.")
    else:
        typer.echo(_style("\nApplied.", "yellow") + " The kernel holds fwsync's rules.")
    _remember(kept)
    if armed is not None:
        typer.echo(_style(f"Unconfirmed: run `fwsync confirm` within {confirm_within} s", "bold")
                   + f" (by {time.strftime('%H:%M:%S', time.localtime(armed.deadline))}), or "
                   "fwsync's objects are put back as they were before this apply "
                   f"({armed.timer.get('kind')} timer; `fwsync status` shows it).")
    if not after.empty:
        typer.echo(_style("warning: the kernel reads back differently from what was written; "
                          "`fwsync plan` will show the difference", "yellow"), err=True)
    if not reach.enforcing and not audit_only:
        # The write succeeded, but what the user asked for (the rules deciding) does not hold:
        # a failure to a script or CI gating on the exit status, as a failed postcondition is
        # to terraform apply. The changes stay: they are the rules, only not reached first.
        _fail("fwsync's rules are NOT enforced: "
              f"{'; '.join(reach.problems)}; if something else changed the kernel as fwsync "
              "wrote it (a `ufw reload`, a dockerd start): run `fwsync apply` again, or "
              "`fwsync daemon`, which repairs this")


def _remember(error: str | None) -> None:
    if error is not None:
        typer.echo(_style(f"warning: {error}; if Docker cannot be asked later, apply will "
                          "refuse rather than drop rules that depend on it", "yellow"), err=True)


@app.command()
def status(
    rules: RulesOpt = DEFAULT_RULES,
    backend: BackendOpt = BackendName.auto,
    fmt: FormatOpt = Format.text,
) -> None:
    """What is enforced now: each published port, who may reach it, which rule decides."""
    from dataclasses import replace

    from fwsync.backends.base import BackendError
    from fwsync.core.audit import audit_problem
    from fwsync.core.counts import RuleCount
    from fwsync.core.logging_rules import unread_logs
    from fwsync.observe.activity_file import read_activity
    from fwsync.present import (
        counts_json,
        counts_lines,
        port_counts_lines,
        status_json,
        status_text,
    )
    from fwsync.reconcile import counts_now, planned_enforcement

    planned = _plan(rules, backend)
    chosen = planned.backend
    try:
        # Yes only when new connections reach fwsync's rules before anything else can accept
        # them, in every family, and its rules as the kernel lists them give the policy's
        # verdicts (reconcile.check_enforced: core/enforcing and fwsync.verify).
        reach = planned_enforcement(planned)
    except BackendError as exc:
        _fail(str(exc))
    if reach.enforcing:
        enforced = f"yes, {chosen.name} backend ({planned.backend_reason})"
    elif reach.audited and replace(reach, audited=()).enforcing:
        enforced = (f"NO, AUDIT MODE: {audit_problem(reach.audited)}; `fwsync log --would-deny` "
                    "shows what they would refuse")
    elif reach.held:
        why = ("fwsync's rules, as the kernel holds them, give other verdicts than the policy"
               if reach.reached else "packets bypass fwsync's rules")
        enforced = f"NO: {why} ({'; '.join(reach.problems)}) — run `fwsync apply`"
    else:
        enforced = "no — fwsync has not been applied on this host (run `fwsync apply`)"
    in_sync = planned.plan.in_sync
    from fwsync.daemon.state import describe, read_state

    daemon_state = read_state()
    from fwsync.core.build import build_ruleset, proxy_gap
    from fwsync.core.networks import not_governed

    ruleset = planned.ruleset or build_ruleset(planned.policy, planned.docker).ruleset
    # Said first: bridges Docker names that are not trusted, what the backend cannot close.
    gaps = not_governed(ruleset, chosen.name,
                        proxy_gap(ruleset, planned.docker, chosen.proxy_catchall))
    # What plan and apply would say too: a bridge fwsync cannot name, Docker unreachable, ...
    notes = [f"Note: {n}" for n in planned.plan.notes if n not in gaps]
    if planned.refusal is not None:
        in_sync = False
        notes.append(f"Note: apply would refuse: {planned.refusal}")
    if unread := unread_logs(planned.policy, bool(daemon_state and daemon_state.get("running"))):
        notes.append(f"Note: {unread}")
    from fwsync.present_pending import rollout_status

    rollout_lines, rollout = rollout_status()  # `apply --confirm-within`: pending, reverted
    notes += [f"Note: {line}" for line in rollout_lines]
    counts: tuple[RuleCount, ...] | str
    per_port: dict[tuple[str, str], int] = {}
    try:
        counts, per_port = counts_now(chosen, planned.policy)
    except BackendError as exc:
        counts = str(exc)
    if fmt is Format.json:
        data = status_json(planned.policy, planned.docker, enforced, in_sync, ruleset)
        counts_json(data, counts, read_activity(), time.time(), per_port)
        data["not_governed"] = list(gaps)
        data["notes"] = [n.removeprefix("Note: ") for n in notes]
        data["daemon"] = daemon_state
        data["rollout"] = rollout
        # Audited rules the kernel holds (core/audit): the policy is not enforced where they are.
        data["audited"] = list(reach.audited)
        _emit_json(data)
    else:
        from fwsync.core.exposure_report import exposure_report

        # One report for the ports' table and their counts.
        report = exposure_report(planned.policy, planned.docker, ruleset)
        tty = sys.stdout.isatty()
        if tty:
            from rich.console import Console

            from fwsync.present_report import print_status

            print_status(Console(), report, planned.docker, enforced, in_sync,
                         [*(f"Not governed: {g}" for g in gaps), "", *notes,
                          *describe(daemon_state)], planned.policy, ruleset)
        else:
            typer.echo(status_text(planned.policy, planned.docker, enforced, in_sync, _style,
                                   ruleset, gaps, report))
        if lines := counts_lines(counts, read_activity(), time.time()):
            typer.echo("\n" + "\n".join(lines))
        if lines := port_counts_lines(report, per_port):
            typer.echo("\n" + "\n".join(lines))
        if not tty:  # the terminal's table has them above
            typer.echo("\n" + "\n".join([*(_style(n, "yellow") for n in notes),
                                          *describe(daemon_state)]))


@app.command()
def explain(
    source: Annotated[str, typer.Argument(help="The client's address, e.g. 198.51.100.7.")],
    hostport: Annotated[str, typer.Argument(
        metavar="HOSTPORT[/PROTO]", help="The published host port it connects to, e.g. "
                                         "5432/tcp (tcp when no protocol is given).")],
    to: Annotated[str | None, typer.Option(
        "--to", metavar="ADDR", help="The host address it connects to (default: any).")] = None,
    rules: RulesOpt = DEFAULT_RULES,
    fmt: FormatOpt = Format.text,
) -> None:
    """Who decides one connection: the verdict, the container it reaches, the rule or default.

    Computed from the same ruleset `apply` writes (rules + Docker's published ports), and
    beside it what fwsync's rules as the kernel lists them do to that connection (when the
    kernel can be read). Exit 0 whenever it could answer, whatever the verdict; 1 on bad
    input."""
    from fwsync.backends.base import BackendError
    from fwsync.core.build import build_ruleset
    from fwsync.core.explain import BadQuestion, parse_connection
    from fwsync.core.explain import explain as explain_connection
    from fwsync.present_report import explain_json, explain_text
    from fwsync.reconcile import RulesInvalid, load_policy, observe_now, plan_policy
    from fwsync.verify.answer import kernel_answers

    try:
        conn = parse_connection(source, hostport, to)
    except BadQuestion as exc:
        _fail(str(exc))
    try:
        policy, _warnings = load_policy(rules)
    except RulesInvalid as exc:
        _print_diagnostics(exc)
    docker = observe_now()  # what apply builds from, Docker's last answer included
    kernel: tuple[str, ...] | None = None
    unread: str | None = None
    try:
        # The rules' answer, and beside it the kernel's: fwsync's objects as it lists them,
        # evaluated for this very connection (fwsync.verify), as status checks every source.
        planned = plan_policy(policy, docker, "auto")
        assert planned.ruleset is not None
        ruleset = planned.ruleset
    except RulesInvalid as exc:
        _print_diagnostics(exc)
    except (BackendError, OSError) as exc:  # not root: the rules' answer alone
        built = build_ruleset(policy, docker)
        if built.problems:
            _print_diagnostics(RulesInvalid(built.problems))
        ruleset, unread = built.ruleset, str(exc)
    result = explain_connection(ruleset, docker, conn)
    if unread is None:
        if planned.current:
            kernel = kernel_answers(ruleset, planned.backend.name, planned.current, [
                (r.binding, conn.source, conn.to, r.docker_proxy) for r in result.reaches])
        else:
            unread = "fwsync holds nothing in the kernel: it has not been applied on this host"
    if fmt is Format.json:
        _emit_json(explain_json(result, kernel, unread))
    else:
        typer.echo(explain_text(result, _style, kernel, unread))


@app.command()
def remove(backend: BackendOpt = BackendName.auto) -> None:
    """Take out everything fwsync put in the kernel, and nothing else (`auto`: every backend's)."""
    from fwsync import lock
    from fwsync.backends.base import BackendError
    from fwsync.reconcile import all_backends

    removed: dict[str, tuple[str, ...]] = {}
    targets = [b for b in all_backends() if backend is BackendName.auto or b.name == backend.value]
    try:
        with lock.exclusive():
            for chosen in targets:
                try:
                    chosen.detect()
                except BackendError:
                    if backend is not BackendName.auto:
                        raise  # asked for by name: say what is missing
                    continue  # its tools are not installed: it cannot have written anything
                removed.update(chosen.remove())
    except lock.LockError as exc:
        _fail(f"{exc}; nothing was changed")
    except BackendError as exc:
        _fail(str(exc))
    if not removed:
        typer.echo("Nothing to remove: fwsync has nothing in the kernel.")
        return
    for key in sorted(removed):
        lines = len(removed[key])  # nftables' remove lists no rule or element (slow): none
        typer.echo(_style(f"  - {key}", "red") + (f"  ({lines} lines)" if lines else ""))
    typer.echo(_style("Removed.", "green") + " Docker's and everyone else's rules are untouched.")


@app.command()
def confirm() -> None:
    """Keep the change `apply --confirm-within` made: its revert is called off."""
    from fwsync import lock
    from fwsync.rollout.pending import PendingUnreadable
    from fwsync.rollout.revert import confirm as confirm_pending

    try:
        done = confirm_pending()
    except (lock.LockError, PendingUnreadable) as exc:
        _fail(str(exc))
    if done.pending is None:
        last = done.last_revert
        why = ""
        if last is not None and last.get("reverted_at"):
            at = time.strftime("%H:%M:%S", time.localtime(float(last["reverted_at"])))
            why = f"; the last unconfirmed apply, by {last.get('by')}, was reverted at {at}"
        _fail(f"nothing to confirm: no apply is waiting for confirmation{why}")
    p = done.pending
    typer.echo(_style("Confirmed.", "green") + f" The apply of {p.rules} ({p.backend}) by {p.by}"
               f" at {time.strftime('%H:%M:%S', time.localtime(p.applied_at))} stays; its "
               "revert is called off.")
    if done.warning:
        typer.echo(_style(f"warning: {done.warning} (it finds nothing to revert)", "yellow"),
                   err=True)


@app.command("revert-pending")
def revert_pending(
    token: Annotated[str | None, typer.Option(
        "--token", help="Only the pending change with this token (the timer's own).")] = None,
    wait_until: Annotated[float | None, typer.Option(
        "--wait-until", hidden=True, help="Sleep until this wall-clock time first.")] = None,
) -> None:
    """Revert an unconfirmed apply now: put back fwsync's objects as they were before it.
    Its timer runs this at the deadline."""
    import logging

    from fwsync import lock
    from fwsync.rollout.pending import PendingUnreadable, who
    from fwsync.rollout.revert import revert_pending as revert

    logging.basicConfig(level=logging.INFO, format="%(asctime)s fwsync[%(process)d]: "
                                                   "%(message)s")
    while wait_until is not None and (left := wait_until - time.time()) > 0:
        time.sleep(min(left, 1.0))  # wall clock, re-read: a suspended machine wakes late
    try:
        record = revert(token, "timer" if token else f"fwsync revert-pending ({who()})")
    except (lock.LockError, PendingUnreadable) as exc:
        _fail(f"cannot revert: {exc}")
    if record is None:
        typer.echo("Nothing to revert: no apply is waiting for confirmation.")
        return
    if record["result"] != "reverted":
        _fail(f"the revert failed: {record['error']}")
    typer.echo(_style("Reverted.", "yellow") + f" fwsync's objects are as they were before "
               f"the apply by {record['by']} ({len(record['changed'])} objects put back).")


class LogFormat(StrEnum):
    text = "text"
    json = "json"


@app.command()
def daemon(
    rules: RulesOpt = DEFAULT_RULES,
    backend: BackendOpt = BackendName.auto,
    drift_interval: Annotated[float, typer.Option(
        "--drift-interval", envvar="FWSYNC_DRIFT_INTERVAL", min=0.1,
        help="Seconds between read-backs of fwsync's kernel objects (drift is repaired).")
    ] = 1.0,
    metrics_address: Annotated[str | None, typer.Option(
        "--metrics-address", envvar="FWSYNC_METRICS_ADDRESS",
        help="Serve Prometheus metrics on HOST:PORT (e.g. 127.0.0.1:9817); off by default.")
    ] = None,
    log_format: Annotated[LogFormat, typer.Option(
        "--log-format", envvar="FWSYNC_LOG_FORMAT", help="One line per event: text or json.")
    ] = LogFormat.text,
) -> None:
    """Run beside dockerd: reconcile on Docker events, on rules changes and on drift.

    Runs until SIGTERM, then exits 0 and leaves the rules enforced (`fwsync remove` takes them
    out). SIGHUP reloads the rules."""
    import gc

    gc.enable()  # main() turns it off for one-shot commands; a daemon runs for months
    from fwsync import lock
    from fwsync.daemon.logs import setup_logging
    from fwsync.daemon.metrics import parse_address
    from fwsync.daemon.service import DaemonConfig, run_daemon

    if not math.isfinite(drift_interval):  # nan and inf pass typer's min=0.1
        _fail(f"--drift-interval {drift_interval}: expected a number of seconds, 0.1 or more")
    if metrics_address:
        try:
            parse_address(metrics_address)
        except ValueError as exc:
            _fail(f"--metrics-address {exc}")
    try:
        lock.lock_timeout()  # refused now, not at the first reconcile
    except lock.LockError as exc:
        _fail(str(exc))
    setup_logging(log_format.value)
    config = DaemonConfig(rules=rules.absolute(), backend=backend.value,
                          drift_interval=drift_interval, metrics_address=metrics_address)
    try:
        code = run_daemon(config)
    except OSError as exc:  # e.g. the metrics port is taken
        _fail(f"cannot start the daemon: {exc}")
    raise typer.Exit(code)


class FailOn(StrEnum):
    serious = "serious"
    warning = "warning"
    info = "info"


DOCTOR_FINDINGS_EXIT = 3  # 2 is click's usage error, 1 an error running doctor


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """`90s`, `10m`, `2h`, `7d` → seconds."""
    unit = text[-1:]
    if unit not in _DURATION or not text[:-1].isascii() or not text[:-1].isdigit():
        raise typer.BadParameter(f"{text!r}: expected a number and s, m, h or d (e.g. 10m)")
    return int(text[:-1]) * _DURATION[unit]


def _decision_text(d: dict[str, Any]) -> str:
    sport = f":{d['sport']}" if d.get("sport") is not None else ""
    host = f"[{d['host_ip']}]" if ":" in str(d.get("host_ip")) else d.get("host_ip")
    port = f":{d['port']}" if d.get("port") is not None else ""
    who = f" ({d['container']})" if d.get("container") else ""
    return (f"{d.get('time')} {str(d.get('verdict')).upper():<6} {d.get('src')}{sport} → "
            f"{host}{port}/{d.get('proto')}{who} by {d.get('origin')}"
            + (f" in {d['in']}" if d.get("in") else ""))


@app.command("log")
def log_(
    since: Annotated[str | None, typer.Option(
        "--since", metavar="DURATION", help="Only the last DURATION (e.g. 10m, 2h, 7d).")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing decisions as the daemon writes them.")] = False,
    fmt: FormatOpt = Format.text,
    would_deny: Annotated[bool, typer.Option(
        "--would-deny", help="Only what audited rules would have refused (`audit deny ...`, "
                             "`mode audit`): verdicts would-deny, would-reject, would-limit."
    )] = False,
) -> None:
    """The decisions fwsync logged (`logging` and `log` in the rules, and what audited rules
    saw), as `fwsync daemon` wrote them: who, to which published address and port, the
    container, the verdict and the rule. --format json: one JSON object a line."""
    import json
    import time as time_

    from fwsync.core.audit import is_would
    from fwsync.daemon.decisions import decisions_path, read_decisions

    start = time_.time() - _duration(since) if since else None
    path = decisions_path()

    def show(d: dict[str, Any]) -> bool:
        """Print the decision unless --would-deny leaves it out; whether it was printed."""
        if would_deny and not is_would(str(d.get("verdict", ""))):
            return False
        typer.echo(json.dumps(d) if fmt is Format.json else _decision_text(d))
        return True

    seen = sum(show(d) for d in read_decisions(path, start))
    if not follow:
        if not seen and fmt is not Format.json:
            typer.echo(f"No decisions logged{' in the last ' + since if since else ''} "
                       f"({path}). fwsync logs what the rules' `logging` level and `log` "
                       "options say, through `fwsync daemon`.", err=True)
        return
    offset = path.stat().st_size if path.exists() else 0
    inode = path.stat().st_ino if path.exists() else None
    try:
        while True:
            time_.sleep(0.5)
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if st.st_ino != inode or st.st_size < offset:  # rotated: read the new one whole
                inode, offset = st.st_ino, 0
            if st.st_size == offset:
                continue
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[:chunk.rfind(b"\n") + 1]
            offset += len(complete)
            for line in complete.decode(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    show(json.loads(line))
    except KeyboardInterrupt:
        return


@app.command()
def doctor(
    rules: RulesOpt = DEFAULT_RULES,
    fmt: FormatOpt = Format.text,
    ignore: Annotated[list[str] | None, typer.Option(
        "--ignore", metavar="CHECK", help="Leave a check out (repeatable), e.g. no-swap.")
    ] = None,
    fail_on: Annotated[FailOn, typer.Option(
        "--fail-on", help=f"Exit {DOCTOR_FINDINGS_EXIT} when a finding is this severe or worse.")
    ] = FailOn.serious,
    sample: Annotated[float, typer.Option(
        "--sample", min=0, help="Seconds to sample docker-proxy CPU time (0: skip).")] = 1.0,
) -> None:
    """Check this Docker host for the gotchas that bite people; say what to do about each.

    Exit status: 0 nothing serious, 3 serious findings (see --fail-on), 1 doctor could not run."""
    from fwsync.doctor.checks import CHECKS
    from fwsync.doctor.report import report_json, report_text
    from fwsync.doctor.run import doctor_report
    from fwsync.observe.host_facts import DockerUnreachable

    if not math.isfinite(sample):
        _fail(f"--sample {sample}: expected a number of seconds, 0 or more")
    unknown = sorted(set(ignore or ()) - CHECKS.keys())
    if unknown:
        raise typer.BadParameter(f"no check named {', '.join(unknown)}; "
                                 f"checks: {', '.join(CHECKS)}", param_hint="--ignore")
    try:
        report = doctor_report(rules, ignore=ignore or (), sample_seconds=sample)
    except DockerUnreachable as exc:
        _fail(f"{exc}; doctor inspects containers, so it needs Docker (set DOCKER_HOST)")
    if fmt is Format.json:
        _emit_json(report_json(report))
    else:
        typer.echo(report_text(report, _style))
    if report.at_least(fail_on.value):
        raise typer.Exit(DOCTOR_FINDINGS_EXIT)


@app.command("import-ufw")
def import_ufw(
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the rules file here (default: standard output).")] = None,
    ufw_dir: Annotated[Path, typer.Option(
        "--ufw-dir", help="ufw's configuration: user.rules, user6.rules, ufw.conf.")
    ] = Path("/etc/ufw"),
    default_file: Annotated[Path, typer.Option(
        "--default-file", help="ufw's default policies (DEFAULT_INPUT_POLICY, IPV6).")
    ] = Path("/etc/default/ufw"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --output file.")
                     ] = False,
    fmt: FormatOpt = Format.text,
) -> None:
    """Write fwsync rules equivalent to the host's ufw rules; list what has no equivalent.

    Rules go to --output or stdout, the report to stderr (--format json: JSON on stdout)."""
    from fwsync.importers.ufw import import_ufw as convert
    from fwsync.importers.ufw import report_json, report_lines
    from fwsync.importers.ufw_files import ImportFilesError, read_ufw_files, write_rules_file
    from fwsync.rules.load import read_list
    from fwsync.rules.syntax import parse_sources

    try:
        result = convert(read_ufw_files(ufw_dir, default_file))
        checked = parse_sources([(str(output or "<generated>"), result.text)], read_list)
        if not checked.ok:  # a bug here, not the user's: never hand out rules that don't load
            _fail("import-ufw generated invalid rules (please report this): "
                  + "; ".join(str(d) for d in checked.diagnostics if d.severity == "error"))
        if output is not None:
            write_rules_file(output, result.text, force)
    except ImportFilesError as exc:
        _fail(str(exc))
    if fmt is Format.json:
        _emit_json({**report_json(result), "output": str(output) if output else None,
                    "rules_text": result.text})
        return
    if output is None:
        typer.echo(result.text, nl=False)
    for line in report_lines(result):
        typer.echo(line, err=True)
    if output is not None:
        typer.echo(f"Wrote {output}. Next: fwsync check {output}; fwsync plan --rules {output}",
                   err=True)


def main() -> None:
    """Bad input gets one line and exit status 1, everywhere: click's usage errors (an unknown
    option, a value out of range) exited 2 with a framed message, and 2 is what `plan
    --detailed-exitcode` answers for "there are changes"."""
    import gc

    from typer.exceptions import TyperException  # typer's own click raises these

    # A command runs once and exits: the cyclic garbage collector would only walk the 100k
    # strings and tuples of a big address list again and again as they are made (7-13 % of
    # the CPU of a no-op `plan` at 100k entries). Reference counting still frees what is let
    # go; `daemon` turns it back on.
    gc.disable()

    if len(sys.argv) <= 1:
        app()  # no command: the help, as typer shows it
    try:
        code = app(standalone_mode=False)
    except TyperException as exc:
        message = " ".join(str(getattr(exc, "format_message", exc.__str__)()).split())
        typer.echo(f"error: {message}", err=True)
        sys.exit(1)
    except typer.Abort:
        typer.echo("error: aborted; nothing was changed", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
