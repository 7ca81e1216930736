"""The command line (typer): parse options, call the core, print, map errors to exit codes."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from fwsync import lock
from fwsync.backends.base import BackendError
from fwsync.core.diff import diff
from fwsync.present import plan_json, plan_text, status_json, status_text
from fwsync.reconcile import Planned, RulesInvalid, all_backends, apply_planned, make_plan
from fwsync.rules.load import load_rules

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    help="Declarative, UFW-style firewall rules for the ports Docker publishes.",
    pretty_exceptions_enable=False,
)

DEFAULT_RULES = Path("/etc/fwsync/rules")


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


def _plan(rules: Path, backend: BackendName) -> Planned:
    try:
        return make_plan(rules, backend.value)
    except RulesInvalid as exc:
        _print_diagnostics(exc)
    except BackendError as exc:
        _fail(f"{exc}; nothing was changed")  # planning only reads


def _emit_json(data: dict[str, Any]) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


@app.command()
def check(
    rules_arg: Annotated[Path | None, typer.Argument(metavar="[RULES]",
                                                     help="Defaults to --rules.")] = None,
    rules: RulesOpt = DEFAULT_RULES,
    fmt: FormatOpt = Format.text,
) -> None:
    """Parse and validate rules; print FILE:LINE:COL: error|warning: ... per problem."""
    path = rules_arg or rules
    result = load_rules(path)
    if fmt is Format.json:
        _emit_json({"valid": result.ok,
                    "diagnostics": [d.model_dump() for d in result.diagnostics]})
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
) -> None:
    """Show what `apply` would change in the kernel."""
    planned = _plan(rules, backend)
    if not planned.plan.empty:
        try:
            planned.backend.check(planned.plan)
        except BackendError as exc:
            _fail(f"this plan would fail to apply: {exc}")
    if fmt is Format.json:
        _emit_json(plan_json(planned.plan, planned.backend_reason, planned.warnings))
    else:
        typer.echo(plan_text(planned.plan, planned.backend_reason, planned.warnings, _style))
    if detailed_exitcode and not planned.plan.empty:
        raise typer.Exit(2)


@app.command()
def apply(
    rules: RulesOpt = DEFAULT_RULES,
    backend: BackendOpt = BackendName.auto,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Don't ask (never asked when stdin "
                                                          "is not a terminal).")] = False,
) -> None:
    """Make the kernel match the rules, in one transaction per address family."""
    try:
        with lock.exclusive():
            planned = _plan(rules, backend)
            chosen = planned.backend
            typer.echo(plan_text(planned.plan, planned.backend_reason, planned.warnings, _style))
            if planned.plan.empty:
                return
            if sys.stdin.isatty() and not yes and not typer.confirm("\nApply these changes?"):
                _fail("cancelled; nothing was changed")
            apply_planned(planned)
            after = diff(chosen.name, planned.plan.desired, chosen.read())
    except lock.LockTimeout as exc:
        _fail(f"{exc}; nothing was changed")
    except BackendError as exc:
        _fail(str(exc))
    typer.echo(_style("\nApplied.", "green") + " fwsync's rules are enforced.")
    if not after.empty:
        typer.echo(_style("warning: the kernel reads back differently from what was written; "
                          "`fwsync plan` will show the difference", "yellow"), err=True)


@app.command()
def status(
    rules: RulesOpt = DEFAULT_RULES,
    backend: BackendOpt = BackendName.auto,
    fmt: FormatOpt = Format.text,
) -> None:
    """What is enforced now: each published port, who may reach it, which rule decides."""
    planned = _plan(rules, backend)
    chosen = planned.backend
    current = chosen.read()
    jumps = [k for k in current if k.endswith(" jump")]
    if current and jumps:
        enforced = f"yes, {chosen.name} backend ({planned.backend_reason})"
    elif current:
        enforced = "NO: fwsync's chains exist but nothing jumps to them — run `fwsync apply`"
    else:
        enforced = "no — fwsync has not been applied on this host (run `fwsync apply`)"
    in_sync = planned.plan.empty
    from fwsync.daemon.state import describe, read_state

    daemon_state = read_state()
    if fmt is Format.json:
        data = status_json(planned.policy, planned.docker, enforced, in_sync)
        data["daemon"] = daemon_state
        _emit_json(data)
    else:
        typer.echo(status_text(planned.policy, planned.docker, enforced, in_sync, _style))
        typer.echo("\n" + "\n".join(describe(daemon_state)))


@app.command()
def remove(backend: BackendOpt = BackendName.auto) -> None:
    """Take out everything fwsync put in the kernel, and nothing else (`auto`: every backend's)."""
    removed: dict[str, tuple[str, ...]] = {}
    targets = [b for b in all_backends() if backend is BackendName.auto or b.name == backend.value]
    try:
        with lock.exclusive():
            for chosen in targets:
                try:
                    chosen.detect()
                except BackendError:
                    continue  # its tools are not installed: it cannot have written anything
                removed.update(chosen.remove())
    except lock.LockTimeout as exc:
        _fail(f"{exc}; nothing was changed")
    except BackendError as exc:
        _fail(str(exc))
    if not removed:
        typer.echo("Nothing to remove: fwsync has nothing in the kernel.")
        return
    for key in sorted(removed):
        typer.echo(_style(f"  - {key}", "red") + f"  ({len(removed[key])} lines)")
    typer.echo(_style("Removed.", "green") + " Docker's and everyone else's rules are untouched.")


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
    from fwsync.daemon.logs import setup_logging
    from fwsync.daemon.metrics import parse_address
    from fwsync.daemon.service import DaemonConfig, run_daemon

    if metrics_address:
        try:
            parse_address(metrics_address)
        except ValueError as exc:
            _fail(f"--metrics-address {exc}")
    setup_logging(log_format.value)
    config = DaemonConfig(rules=rules.absolute(), backend=backend.value,
                          drift_interval=drift_interval, metrics_address=metrics_address)
    try:
        code = run_daemon(config)
    except OSError as exc:  # e.g. the metrics port is taken
        _fail(f"cannot start the daemon: {exc}")
    raise typer.Exit(code)


def main() -> None:
    app()
