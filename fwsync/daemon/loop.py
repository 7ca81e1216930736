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

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from fwsync import lock
from fwsync.backends.base import Backend, BackendError
from fwsync.core.diff import Desired, Plan, diff
from fwsync.core.enforcing import Enforcement
from fwsync.core.observed import DockerState, L4Proto, PublishedPort, as_remembered
from fwsync.daemon.coalesce import Batch
from fwsync.daemon.drift import FULL_CHECK_EVERY, Enforced, drifted
from fwsync.daemon.memory import release_memory
from fwsync.daemon.rules_watch import Fingerprint, fingerprint
from fwsync.observe.docker import docker_client, observe_docker
from fwsync.observe.git import head_commit
from fwsync.observe.memory import recall
from fwsync.observe.swarm import read_ingress_chain
from fwsync.reconcile import (
    Planned,
    RulesInvalid,
    apply_planned,
    check_enforced,
    make_plan,
    plan_policy,
    planned_enforcement,
    remember_enforced,
    restore_plan,
    select_backend,
)
from fwsync.rollout.pending import pending_exists
from fwsync.rollout.revert import reverted_hold, window_hold

log = logging.getLogger("fwsync.daemon")

# "held": nothing written, the rules on disk wait (an unconfirmed apply, rollout/revert.py).
Result = Literal["applied", "unchanged", "invalid-rules", "held", "error"]
STARTUP_TIMEOUT = 2
MESH_RELOOK = 10.0  # seconds between looks while a worker's mesh has a port no service claims


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
    urgent_events: int = 0  # Docker events served that are not lazy (coalesce.py)
    detected_by: str | None = None  # what found the drift repaired: "tick" or "netlink"
    drift_latency: float | None = None  # seconds from its detection to the kernel repaired
    notes: tuple[str, ...] = ()
    steps: dict[str, float] = field(default_factory=dict)  # observe/plan/apply durations, ms
    # The kernel's answer to "enforcing?" after this reconcile (Reconciler.enforcement); None:
    # not known (no reconcile has enforced anything yet, or the kernel could not be read).
    enforcement: Enforcement | None = None
    # The kernel holds what the rules on disk say, read back after this reconcile (status'
    # "in sync"); False when the rules are invalid (the last good ones are enforced instead).
    in_sync: bool = False
    # sha256 of the valid rules this reconcile read (Policy.digest) and the git commit of the
    # repository they are in ("" outside one); None: none were read (invalid, or an error).
    rules_digest: str | None = None
    rules_commit: str = ""

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "trigger": self.trigger, "result": self.result,
            "duration_ms": round(self.duration * 1000, 1),
        }
        if self.counts:
            out.update(add=self.counts.get("add", 0), remove=self.counts.get("remove", 0),
                       objects=self.counts.get("objects", 0))
        out.update(self.steps)
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
        if self.urgent_events:
            out["urgent_events"] = self.urgent_events
        if self.event_received is not None and self.enforced_at is not None:
            out["event_received"] = round(self.event_received, 6)
            out["enforced"] = round(self.enforced_at, 6)
            out["event_latency_ms"] = round((self.event_latency or 0.0) * 1000, 1)
        if self.detected_by is not None:
            out["detected_by"] = self.detected_by
        if self.drift_latency is not None:
            out["drift_latency_ms"] = round(self.drift_latency * 1000, 1)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


Observe = Callable[[int, bool], DockerState]  # (timeout, full) → Docker now (never raises)


class Reconciler:
    def __init__(self, rules: Path, backend: str | Backend = "auto", *,
                 lock_path: Path | None = None, observe: Observe | None = None) -> None:
        self.rules = rules
        self.backend = backend  # a name (chosen on every reconcile, as the CLI does) or one
        self.lock_path = lock_path or lock.DEFAULT_LOCK
        self._observe_docker: Observe = observe or self._ask_docker
        self._client: Any = None  # one DockerClient kept for observing (the worker's own)
        self.docker: DockerState | None = None  # the last *successful* look at Docker
        self._unanswered: DockerState | None = None  # Docker's last failure, never answered
        self._recalled: DockerState | None = None  # _unanswered with the memory on disk
        self._looked_at = 0.0  # time.monotonic() of that look
        self.docker_error: str | None = None
        self.enforced: Enforced | None = None
        self.observed: DockerState | None = None  # what the last reconcile built from
        # The kernel's answer to "enforcing?" (core/enforcing), read back after the last
        # reconcile; None: not asked yet, or the kernel could not be read.
        self.enforcement: Enforcement | None = None
        self.rules_valid: bool | None = None
        self.rules_print: Fingerprint = ()
        self.list_files: tuple[Path, ...] = ()  # the last good policy's `define ... file` lists
        self._reported: tuple[str, ...] = ()
        self._disagreed: tuple[str, ...] = ()  # logged once per distinct set
        self._drift_checks = 0
        self.checked_full = False  # whether the last check_drift listed every set element
        self._kept: DockerState | None = None  # what _remember last wrote (seen_at aside)
        # Why the last reconcile held off (`apply --confirm-within`, _held): "window" or
        # "reverted" (with the reverted rules' digest); None when it did not.
        self.held: tuple[str, str] | None = None

    @property
    def ports(self) -> tuple[PublishedPort, ...]:
        """The bindings the last reconcile built from (Docker's answer, or what fwsync
        remembered of it): logged decisions name their container from these."""
        return self.observed.ports if self.observed is not None else ()

    # -- inputs ---------------------------------------------------------------------------

    def _observe(self, batch: Batch) -> DockerState:
        """Docker as it is now; while it cannot be asked, as it was last seen (the containers
        keep running and publishing without dockerd: their rules must stay as they were)."""
        if not batch.needs_docker and self.docker is not None:
            # While Docker cannot be asked, a drift repair builds as the last look did (from
            # what Docker last reported: narrowing only), not from the last good look.
            return self.docker if self.docker_error is None else \
                replace(self.docker, stale=self.docker_error)
        if not batch.needs_docker and self._unanswered is not None:
            # Docker has not answered yet: a drift repair does not wait for it to fail again
            # (~0.2-0.3 s here); the next event, reconnect or resync asks it. What the applies
            # kept of it is read again once after each write (its first read costs ~0.2 s).
            if self._recalled is None:
                self._recalled = as_remembered(self._unanswered, recall())
            return self._recalled
        full = isinstance(self._backend_for(batch), str)  # choosing a backend needs /info
        # Until the rules are enforced, Docker gets little time: at boot, with docker.socket,
        # a request would wait for docker.service, which waits for this daemon to be ready.
        state = self._observe_docker(10 if self.enforced is not None else STARTUP_TIMEOUT,
                                     full)
        self.docker_error = state.error
        if state.error is None:
            if not full and self.docker is not None:  # keep what only /info says
                state = replace(state, firewall_backend=self.docker.firewall_backend,
                                version=self.docker.version)
            self.docker = state
            self._unanswered = None
            self._looked_at = time.monotonic()
            return state
        # Unreachable: as last seen by this daemon, else as kept on disk by the last apply
        # (a daemon started while Docker is down), else known to be unknown.
        if self.docker is not None:
            return as_remembered(state, self.docker)
        self._unanswered, self._recalled = state, None
        return as_remembered(state, recall())

    def _ask_docker(self, timeout: int, full: bool) -> DockerState:
        """observe_docker through one kept client (saves connecting and negotiating the API
        version, ~6 ms a reconcile). A fresh client at start, for every full look (reconnect,
        resync, SIGHUP: a restarted dockerd leaves kept connections stale) and after a failure
        of a kept one."""
        if self.enforced is None:
            return observe_docker(timeout)
        if full:
            self._drop_client()
        fresh = self._client is None
        if fresh:
            try:
                self._client = docker_client(timeout)
            except Exception:  # unreachable: the observer itself says how, as a state
                return observe_docker(timeout)
        # Without /info, this node's place in a swarm as last seen (the networks confirm it).
        swarm = self.docker.swarm if self.docker is not None else None
        state = observe_docker(timeout, client=self._client, info=full, swarm=swarm)
        if state.error is not None:
            self._drop_client()
            if not fresh:
                return observe_docker(timeout, info=full, swarm=swarm)
        return state

    def _drop_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def _backend_for(self, batch: Batch) -> str | Backend:
        """`auto` chooses a backend from Docker's firewall and the kernel (and plans the other
        one's leftovers out): that is redone whenever Docker may have changed its firewall — at
        start, on reconnecting (a restarted dockerd), on SIGHUP, every resync, after an error.
        A container event, a rules edit or drift reuses the backend chosen last, which saves
        reading the other backend's kernel objects on the hot path (~15 ms)."""
        rechoose = {"startup", "reconnect", "resync", "signal", "retry"}
        if self.enforced is None or rechoose.intersection(batch.sources) \
                or not isinstance(self.backend, str):
            return self.backend
        return self.enforced.backend

    def rules_changed(self) -> bool:
        """The safety net under file watching: checked on every drift tick."""
        return fingerprint(self.rules, self.list_files) != self.rules_print

    def mesh_changed(self, read: Callable[[], set[tuple[L4Proto, int]] | None]
                     = read_ingress_chain, now: float | None = None) -> bool:
        """On a Swarm worker, checked on every drift tick: the mesh ports in the nat
        DOCKER-INGRESS chain are not those of the last look at Docker, or that look found a
        port there with no service named for it yet and is MESH_RELOOK seconds old (the ingress
        network's gossip can lag the chain). A worker gets no event for a service published on
        the mesh (managers do); until its next look, fwsync's default covers the new port, and
        that look resolves the `service` rules that name it."""
        docker = self.docker
        if docker is None or docker.swarm is None or docker.swarm.manager:
            return False
        chain = read()
        if chain is None:
            return False
        if frozenset(chain) != docker.mesh_chain:
            return True
        age = (time.monotonic() if now is None else now) - self._looked_at
        return bool(docker.mesh_pending) and age >= MESH_RELOOK

    # -- the step -------------------------------------------------------------------------

    def reconcile(self, batch: Batch) -> Outcome:
        t0 = time.monotonic()
        started = time.time()
        base: dict[str, Any] = {"trigger": batch.summary(), "sources": batch.sources,
                                "started": started}
        steps: dict[str, float] = {}
        try:
            docker = self.observed = self._observe(batch)
            steps["observe_ms"] = time.monotonic()
            # Before reading: a later edit re-triggers. A list the policy starts to use shows up
            # in the next tick's fingerprint, which costs one more (empty) reconcile.
            self.rules_print = fingerprint(self.rules, self.list_files)
            with lock.exclusive(self.lock_path):
                # An apply waiting for `fwsync confirm` is neither made the truth nor fought:
                # its timer reverts it or the operator confirms it. Checked first, so invalid
                # rules on disk do not make the last good ones be written over it either.
                if (waiting := window_hold()) is not None:
                    return self._held(("window", ""), waiting, t0, base)
                try:
                    planned = make_plan(self.rules, self._backend_for(batch), docker,
                                        watching=True, full=batch.full)
                except RulesInvalid as exc:
                    return self._keep_last_good(batch, exc, docker, t0, base)
                if (reverted := reverted_hold(planned.policy.digest)) is not None:
                    return self._held(("reverted", planned.policy.digest), reverted, t0, base)
                self.held = None
                steps["plan_ms"] = time.monotonic()
                self.rules_valid = True
                self.list_files = tuple(Path(f) for f in planned.policy.list_files)
                self._reported = ()
                plan = planned.plan
                if not plan.empty:
                    apply_planned(planned)
                self._remember(docker)
                enforced_at = time.time()
                done = steps["apply_ms"] = time.monotonic()
                unheld = self._read_back(planned.backend, plan)
                self.enforcement = self._ask_kernel(planned.backend, planned)
            self.enforced = Enforced(planned.backend, plan.desired, planned.policy)
        except (BackendError, lock.LockError) as exc:
            if self.enforced is not None:  # what the kernel holds now, the failure aside
                self.enforcement = self._ask_kernel(self.enforced.backend)
            return Outcome(result="error", duration=time.monotonic() - t0, error=str(exc),
                           docker_error=self.docker_error, enforcement=self.enforcement,
                           **base)
        out = self._outcome(batch, plan, planned.backend.name, docker, "rules",
                            t0, enforced_at, done, base, planned.plan.notes + unheld)
        marks = [t0, *steps.values()]
        reach = self.enforcement
        return replace(out, steps={k: round((b - a) * 1000, 1) for k, a, b
                                   in zip(steps, marks, marks[1:], strict=False)},
                       # What status would say now: nothing left to write (the kernel read
                       # back as written, or held it already) and no disagreement with the
                       # policy (Plan.in_sync's two halves, from this reconcile's reads).
                       enforcement=reach,
                       in_sync=not unheld and reach is not None and not reach.disagreements,
                       rules_digest=planned.policy.digest, rules_commit=head_commit(self.rules))

    def _held(self, why: tuple[str, str], note: str, t0: float, base: dict[str, Any]
              ) -> Outcome:
        """Nothing written: the kernel is left as the apply or its revert made it. While held,
        drift is not repaired either (check_drift): what the kernel holds is the operator's
        trial or what the revert put back, not the daemon's to change."""
        if self.held != why:
            log.warning("holding off: %s", note)
        self.held = why
        if self.enforced is not None:
            self.enforcement = self._ask_kernel(self.enforced.backend)
        return Outcome(result="held", duration=time.monotonic() - t0, notes=(note,),
                       docker_error=self.docker_error, enforcement=self.enforcement, **base)

    def holding(self) -> bool:
        """The last reconcile held off and its reason still stands (cheap: the drift tick
        asks it every second). The reverted rules stop being held when `fwsync apply` runs
        (rollout/pending.release_hold) or they change (the rules watch reconciles then)."""
        if self.held is None:
            return False
        if self.held[0] == "window":
            return pending_exists()
        return reverted_hold(self.held[1]) is not None

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
        # The same pipeline as valid rules take (reconcile.py), fed the last good policy, or
        # what the kernel held at start when there never was one.
        planned: Planned | None = None
        if enforced.policy is not None:
            planned = plan_policy(enforced.policy, docker, backend, watching=True,
                                   full=batch.full)
            if planned.refusal is not None:
                raise BackendError(f"{planned.refusal}; nothing was changed")
            plan = planned.plan
            policy = "last good rules"
        else:
            plan = restore_plan(backend, Desired(enforced.desired, enforced.payload),
                                full=batch.full)
            policy = "kernel"
        if not plan.empty:
            backend.apply(plan)
        enforced_at, done = time.time(), time.monotonic()
        unheld = self._read_back(backend, plan)
        self.enforced = Enforced(backend, plan.desired, enforced.policy, enforced.payload)
        self.enforcement = self._ask_kernel(backend, planned)
        out = self._outcome(batch, plan, backend.name, docker, policy, t0, enforced_at, done,
                            base, unheld)
        return replace(out, result="invalid-rules", diagnostics=diagnostics,
                       enforcement=self.enforcement)

    def _adopt_kernel(self) -> None:
        """Started with invalid rules: what fwsync put in the kernel before stays, and is what
        drift repairs restore."""
        try:
            backend = select_backend(self.backend) if isinstance(self.backend, str) \
                else self.backend
            held = backend.snapshot()
        except BackendError:
            return
        if held.state:
            self.enforced = Enforced(backend, held.state, None, held.payload)

    def _remember(self, docker: DockerState) -> None:
        """Keep what Docker reported for a daemon or an apply started while it cannot be asked
        (observe/memory.py); written when it changed, not on every reconcile."""
        kept = replace(docker, seen_at=None)
        if kept == self._kept:
            return
        error = remember_enforced(docker)
        if error is not None:
            log.warning("%s", error)
            return
        self._kept, self._recalled = kept, None

    def _ask_kernel(self, backend: Backend, planned: Planned | None = None
                    ) -> Enforcement | None:
        """Whether the policy is enforced as the kernel holds it now (reconcile.check_enforced,
        as status asks it): fwsync's rules reached first and, read back, giving the policy's
        verdicts. Without a policy (kept from the kernel at start), reachability alone."""
        try:
            if planned is None or planned.ruleset is None:
                return backend.enforcement()
            if planned.plan.empty:
                answer = planned_enforcement(planned)
            else:
                held = backend.read(planned.plan.desired)
                answer = check_enforced(backend, planned.ruleset, planned.docker, held)
        except BackendError as exc:
            log.warning("cannot tell whether fwsync's rules are enforced: %s", exc)
            return None
        if answer.disagreements and answer.disagreements != self._disagreed:
            log.error("the kernel's rules give other verdicts than the policy: %s",
                      "; ".join(answer.disagreements))
        self._disagreed = answer.disagreements
        return answer

    def _read_back(self, backend: Backend, plan: Plan) -> tuple[str, ...]:
        """A note when the kernel does not hold what was just written, else nothing. What is
        enforced stays plan.desired whatever the kernel reads back: a competing writer's
        ACCEPT above fwsync's jump (the read-back's `not reached:` line) or a hand edit made
        between the write and the read would otherwise become the baseline, and every later
        drift check would find the bypass in place and say nothing. As drift it is repaired
        at the next check, and reported every time."""
        if plan.empty:
            return ()
        held = backend.read(plan.desired)
        after = diff(backend.name, plan.desired, held)
        if after.empty:
            return ()
        keys = ", ".join(c.key for c in after.changes)
        log.warning("the kernel reads back differently from what was written: %s", keys)
        return (f"the kernel reads back differently from what was written ({keys}): drift, "
                "repaired at the next drift check",)

    def _outcome(self, batch: Batch, plan: Plan, backend: str, docker: DockerState,
                 policy: str, t0: float, enforced_at: float, done: float,
                 base: dict[str, Any], notes: tuple[str, ...]) -> Outcome:
        first = batch.first_event
        repaired = tuple(c.key for c in plan.changes) if "drift" in batch.sources else ()
        found = min((t for t in batch.triggers if t.source == "drift"), key=lambda t: t.at,
                    default=None)
        if self.docker_error is not None:
            notes = (*notes, f"Docker unreachable ({self.docker_error}); "
                             + ("its last observed state is used" if docker.stale is not None
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
            urgent_events=sum(t.is_event and not t.lazy for t in batch.triggers),
            detected_by=found.seen_by if found is not None and repaired else None,
            drift_latency=done - found.at if found is not None and repaired else None,
            notes=notes,
            **base,
        )

    # -- drift ----------------------------------------------------------------------------

    def check_drift(self, full: bool | None = None) -> tuple[str, ...]:
        """The cheap periodic read-back; empty when the kernel holds what was enforced. Every
        FULL_CHECK_EVERY-th tick reads every set element; `full` (a check a netlink event
        asked for, daemon/nft_watch.py) decides it instead, outside the tick's count."""
        if self.enforced is None or self.holding():
            return ()
        if full is None:
            self._drift_checks += 1
            full = self._drift_checks % FULL_CHECK_EVERY == 0
        self.checked_full = full
        try:
            return drifted(self.enforced, full=full)
        except BackendError as exc:
            log.warning("drift check failed: %s", exc)
            return ()
        finally:
            if full:
                release_memory()
