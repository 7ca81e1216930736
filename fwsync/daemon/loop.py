"""The reconcile loop's one step: `Reconciler.reconcile(batch)`, idempotent, run any number of
times. It re-reads the world every time — rules from disk, Docker through its API, the kernel
through the backend — and never trusts the triggers for anything but "something may have
changed". Kernel writes happen under fwsync's lock, so a CLI `apply` and the daemon never
interleave.

When the rules on disk are invalid, the last good policy stays enforced: it is rebuilt for the
Docker state of now (a container a `to container` rule names may have come or gone) and repaired
if it drifted, but nothing of the invalid edit reaches the kernel.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fwsync import lock
from fwsync.backends.base import BackendError
from fwsync.core.build import build_ruleset
from fwsync.core.diff import Plan, diff
from fwsync.core.observed import DockerState
from fwsync.daemon.coalesce import Batch
from fwsync.daemon.drift import Enforced, drifted
from fwsync.daemon.rules_watch import Fingerprint, fingerprint
from fwsync.observe.docker import observe_docker
from fwsync.reconcile import RulesInvalid, apply_planned, make_plan, select_backend

log = logging.getLogger("fwsync.daemon")

Result = Literal["applied", "unchanged", "invalid-rules", "error"]


@dataclass(frozen=True)
class Outcome:
    """What one reconcile did and why: the structured log line, the metrics, the state file."""

    result: Result
    trigger: str
    sources: tuple[str, ...]
    started: float  # wall clock
    duration: float  # seconds
    counts: dict[str, int] = field(default_factory=dict)  # lines added/removed, objects changed
    changed: tuple[str, ...] = ()  # kernel objects written
    drift: tuple[str, ...] = ()  # objects found drifted and repaired
    backend: str | None = None
    ports: int | None = None  # published ports governed (as Docker was last seen)
    docker_error: str | None = None
    diagnostics: tuple[str, ...] = ()  # FILE:LINE:COL: error: ... of invalid rules
    error: str | None = None
    policy: str | None = None  # "rules", "last good rules", "kernel" (what is enforced now)
    event_received: float | None = None  # wall clock of the oldest Docker event served
    enforced_at: float | None = None  # wall clock when the kernel held the result
    event_latency: float | None = None  # seconds from event_received to enforced_at
    notes: tuple[str, ...] = ()

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "trigger": self.trigger, "result": self.result,
            "duration_ms": round(self.duration * 1000, 1),
        }
        if self.counts:
            out.update(add=self.counts.get("add", 0), remove=self.counts.get("remove", 0),
                       objects=self.counts.get("objects", 0))
        if self.changed:
            out["changed"] = list(self.changed)
        if self.drift:
            out["drift"] = list(self.drift)
        for key in ("backend", "ports", "policy", "docker_error", "error"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.diagnostics:
            out["diagnostics"] = list(self.diagnostics)
        if self.event_received is not None and self.enforced_at is not None:
            out["event_received"] = round(self.event_received, 6)
            out["enforced"] = round(self.enforced_at, 6)
            out["event_latency_ms"] = round((self.event_latency or 0.0) * 1000, 1)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


class Reconciler:
    def __init__(self, rules: Path, backend: str = "auto") -> None:
        self.rules = rules
        self.backend_name = backend
        self.docker: DockerState | None = None  # the last *successful* look at Docker
        self.docker_error: str | None = None
        self.enforced: Enforced | None = None
        self.rules_valid: bool | None = None
        self.rules_print: Fingerprint = ()
        self._reported: tuple[str, ...] = ()

    # -- inputs ---------------------------------------------------------------------------

    def _observe(self, fresh: bool) -> DockerState:
        """Docker as it is now; while it cannot be asked, as it was last seen (the containers
        keep running and publishing without dockerd: their rules must stay as they were)."""
        if not fresh and self.docker is not None:
            return self.docker
        state = observe_docker()
        self.docker_error = state.error
        if state.error is None:
            self.docker = state
            return state
        return self.docker if self.docker is not None else state

    def rules_changed(self) -> bool:
        """The safety net under file watching: checked on every drift tick."""
        return fingerprint(self.rules) != self.rules_print

    # -- the step -------------------------------------------------------------------------

    def reconcile(self, batch: Batch) -> Outcome:
        t0 = time.monotonic()
        started = time.time()
        base: dict[str, Any] = {"trigger": batch.summary(), "sources": batch.sources,
                                "started": started}
        try:
            docker = self._observe(batch.needs_docker)
            self.rules_print = fingerprint(self.rules)  # before reading: a later edit re-triggers
            with lock.exclusive():
                try:
                    planned = make_plan(self.rules, self.backend_name, docker)
                except RulesInvalid as exc:
                    return self._keep_last_good(batch, exc, docker, t0, base)
                self.rules_valid = True
                self._reported = ()
                plan = planned.plan
                if not plan.empty:
                    apply_planned(planned)
                enforced_at = time.time()
                done = time.monotonic()
                desired = self._read_back(planned.backend, plan)
            self.enforced = Enforced(planned.backend, desired, planned.policy)
        except (BackendError, lock.LockTimeout) as exc:
            return Outcome(result="error", duration=time.monotonic() - t0, error=str(exc),
                           docker_error=self.docker_error, **base)
        return self._outcome(batch, plan, planned.backend.name, docker, "rules",
                             t0, enforced_at, done, base, planned.plan.notes)

    def _keep_last_good(self, batch: Batch, exc: RulesInvalid, docker: DockerState,
                        t0: float, base: dict[str, Any]) -> Outcome:
        """The rules on disk are invalid: report them (once per distinct set of problems) and
        keep enforcing the last good policy — rebuilt for Docker as it is now."""
        self.rules_valid = False
        diagnostics = tuple(str(d) for d in exc.diagnostics)
        if diagnostics != self._reported:
            for line in diagnostics:
                log.error("%s", line)
            self._reported = diagnostics
        if self.enforced is None:
            self._adopt_kernel()
        enforced = self.enforced
        if enforced is None:
            return Outcome(result="invalid-rules", duration=time.monotonic() - t0,
                           diagnostics=diagnostics, docker_error=self.docker_error,
                           notes=("no valid rules yet: nothing is enforced",), **base)
        backend = enforced.backend
        current = backend.read()
        if enforced.policy is not None:
            built = build_ruleset(enforced.policy, docker)
            desired = backend.render(built.ruleset)
            policy = "last good rules"
        else:
            desired, policy = enforced.desired, "kernel"
        plan = diff(backend.name, desired, current)
        if not plan.empty:
            backend.apply(plan)
        enforced_at, done = time.time(), time.monotonic()
        self.enforced = Enforced(backend, self._read_back(backend, plan), enforced.policy)
        out = self._outcome(batch, plan, backend.name, docker, policy, t0, enforced_at, done,
                            base, ())
        return Outcome(**{**out.__dict__, "result": "invalid-rules", "diagnostics": diagnostics})

    def _adopt_kernel(self) -> None:
        """Started with invalid rules: what fwsync put in the kernel before stays, and is what
        drift repairs restore."""
        try:
            backend = select_backend(self.backend_name)
            held = backend.read()
        except BackendError:
            return
        if held:
            self.enforced = Enforced(backend, held, None)

    def _read_back(self, backend: Any, plan: Plan) -> Any:
        """What the kernel holds now. It should equal plan.desired; if it does not (a kernel
        that prints a rule differently), drift is measured against what it holds, or every
        drift check would 'repair' the same difference forever."""
        if plan.empty:
            return plan.desired
        held = backend.read()
        after = diff(backend.name, plan.desired, held)
        if not after.empty:
            log.warning("the kernel reads back differently from what was written: %s",
                        ", ".join(c.key for c in after.changes))
            return held
        return plan.desired

    def _outcome(self, batch: Batch, plan: Plan, backend: str, docker: DockerState,
                 policy: str, t0: float, enforced_at: float, done: float,
                 base: dict[str, Any], notes: tuple[str, ...]) -> Outcome:
        first = batch.first_event
        repaired = tuple(c.key for c in plan.changes) if "drift" in batch.sources else ()
        if self.docker_error is not None:
            notes = (*notes, f"Docker unreachable ({self.docker_error}); "
                             + ("its last observed state is used" if self.docker is not None
                                else "`container` rules match nothing until it answers"))
        return Outcome(
            result="unchanged" if plan.empty else "applied",
            duration=time.monotonic() - t0,
            counts=plan.counts if not plan.empty else {},
            changed=tuple(c.key for c in plan.changes),
            drift=repaired,
            backend=backend,
            ports=len(docker.ports),
            docker_error=self.docker_error,
            policy=policy,
            event_received=first.wall if first else None,
            enforced_at=enforced_at if first else None,
            event_latency=(done - first.at) if first else None,
            notes=notes,
            **base,
        )

    # -- drift ----------------------------------------------------------------------------

    def check_drift(self) -> tuple[str, ...]:
        """The cheap periodic read-back; empty when the kernel holds what was enforced."""
        if self.enforced is None:
            return ()
        try:
            return drifted(self.enforced)
        except BackendError as exc:
            log.warning("drift check failed: %s", exc)
            return ()
