"""Arm, confirm and revert an apply made with `--confirm-within`.

Every step runs under fwsync's apply lock, so an apply, a confirm, the revert and the daemon
never interleave: a confirm that gets the lock first removes the record and the revert that
follows finds nothing to do; a revert that gets it first has put the old objects back, and the
confirm says so."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fwsync import lock
from fwsync.backends.base import Backend, BackendError
from fwsync.core.diff import diff
from fwsync.rollout.pending import (
    Pending,
    PendingUnreadable,
    Snapshot,
    pending_path,
    read_pending,
    read_revert_record,
    remove_pending,
    who,
    write_pending,
    write_revert_record,
)
from fwsync.rollout.timer import TimerError, start_timer, stop_timer

log = logging.getLogger("fwsync.rollout")

# The daemon reverts a pending change itself once it is this overdue: its timer is gone (a
# reboot kills both kinds) or failed. The timer itself gets the time first.
OVERDUE_GRACE = 30.0
# How long the revert waits for the lock: an apply or a daemon reconcile holding it ends in
# seconds, but a revert must not give up for a slow one (it would leave the unconfirmed rules).
REVERT_LOCK_WAIT = 600.0


def revert_log_path() -> Path:
    return pending_path().with_name("revert.log")


def snapshot_all(backends: tuple[Backend, ...]) -> tuple[Snapshot, ...]:
    """fwsync's objects in every backend this host can use, as the kernel holds them now:
    what a revert puts back (an empty one: that backend's objects are taken out). Every
    backend, not only the chosen one: an apply that switches backends removes the other's."""
    out = []
    for backend in backends:
        try:
            backend.detect()
        except BackendError:
            continue  # its tools are missing: it holds nothing, and the apply will not use it
        held = backend.snapshot()
        out.append(Snapshot(backend.name, dict(held.state), held.payload))
    return tuple(out)


def arm(backends: tuple[Backend, ...], chosen: str, rules: Path, rules_digest: str,
        seconds: float) -> Pending:
    """Before the apply writes anything (the caller holds the lock): snapshot, record, start
    the timer. Raises OSError or TimerError, with nothing written to the kernel."""
    token = secrets.token_hex(8)
    now = time.time()
    pending = Pending(token=token, backend=chosen, applied_at=now, deadline=now + seconds,
                      by=who(), rules=str(rules), rules_digest=rules_digest,
                      snapshots=snapshot_all(backends))
    if (exc := write_pending(pending)) is not None:
        raise exc
    # The record is there before the timer: a timer that fires finds what to revert.
    try:
        timer = start_timer(token, seconds, pending.deadline, revert_log_path())
    except TimerError:
        remove_pending()
        raise
    pending = replace(pending, timer=timer)
    if (exc := write_pending(pending)) is not None:
        disarm(pending)
        raise exc
    return pending


def disarm(pending: Pending) -> str | None:
    """The apply failed (and changed nothing) or was confirmed: no revert. A message when the
    timer could not be stopped (harmless: it finds no record with its token)."""
    remove_pending()
    return stop_timer(pending.timer, pending.token)


@dataclass(frozen=True)
class Confirmed:
    pending: Pending | None  # what was confirmed; None: nothing was pending
    last_revert: dict[str, Any] | None  # when nothing was: the last revert, if any
    warning: str | None = None


def confirm() -> Confirmed:
    """Keep the pending change: remove its record and stop its timer. Raises LockError."""
    with lock.exclusive():
        pending = read_pending()
        if pending is None:
            return Confirmed(None, read_revert_record())
        warning = disarm(pending)
    log.info("confirmed the apply of %s by %s (token %s)", pending.rules, pending.by,
             pending.token)
    return Confirmed(pending, None, warning)


def _backend(name: str) -> Backend:
    from fwsync.reconcile import select_backend

    return select_backend(name)


def revert_now(pending: Pending, reverted_by: str) -> dict[str, Any]:
    """Put back every backend's objects as the snapshot holds them, read them back, record it,
    remove the pending record. The caller holds the lock. The record it wrote is returned."""
    from fwsync.reconcile import restore_plan

    started = time.time()
    restored: list[str] = []
    differs: list[str] = []
    error: str | None = None
    try:
        # Put back first, take out after (as apply_planned switches backends): never a moment
        # with neither backend's rules.
        for snap in sorted(pending.snapshots, key=lambda s: not s.state):
            backend = _backend(snap.backend)
            backend.detect()
            if snap.state:
                plan = restore_plan(backend, snap.desired(), full=True)
                if not plan.empty:
                    backend.apply(plan)
                    restored += [c.key for c in plan.changes]
                after = diff(backend.name, snap.state, backend.read(None))
                differs += [c.key for c in after.changes]
            elif backend.holds():
                restored += sorted(backend.remove())
                if backend.holds():
                    differs.append(f"{backend.name}: objects left")
    except BackendError as exc:
        error = str(exc)
    done = time.time()
    record: dict[str, Any] = {
        "token": pending.token, "backend": pending.backend, "by": pending.by,
        "rules": pending.rules, "rules_digest": pending.rules_digest,
        "applied_at": pending.applied_at, "deadline": pending.deadline,
        "reverted_at": done, "revert_started": started, "reverted_by": reverted_by,
        "result": "failed" if error else "reverted", "error": error,
        "changed": restored, "reads_back_differently": differs,
        # The daemon does not apply these rules again until they change or an apply is made
        # (daemon/loop.py): they are what the operator did not confirm.
        "hold": True,
    }
    if (unwritten := write_revert_record(record)) is not None:
        log.error("cannot write the revert record: %s", unwritten)
    remove_pending()
    if error:
        log.error("the revert of the unconfirmed apply (token %s) FAILED: %s", pending.token,
                  error)
    else:
        log.warning("reverted the unconfirmed apply of %s by %s (token %s), %.2f s after its "
                    "deadline: %d objects put back%s", pending.rules, pending.by, pending.token,
                    done - pending.deadline, len(restored),
                    f"; reads back differently: {', '.join(differs)}" if differs else "")
    return record


def revert_pending(token: str | None, reverted_by: str) -> dict[str, Any] | None:
    """The timer's command (and an operator's revert now): revert the pending change if it is
    still the one with `token` (any pending change when None). None when there is nothing to
    revert: it was confirmed, or reverted already. Raises LockError."""
    deadline = time.monotonic() + REVERT_LOCK_WAIT
    while True:
        try:
            with lock.exclusive(timeout=min(30.0, max(0.0, deadline - time.monotonic()))):
                pending = read_pending()
                if pending is None or (token is not None and pending.token != token):
                    log.info("nothing to revert (token %s): confirmed, or reverted already",
                             token)
                    return None
                return revert_now(pending, reverted_by)
        except lock.LockTimeout:
            if time.monotonic() >= deadline:
                raise
            log.warning("waiting for fwsync's lock to revert (token %s)", token)


def window_hold(now: float | None = None) -> str | None:
    """Why the daemon must not apply the rules on disk now, or None: an apply is waiting for
    confirmation, and the kernel holds rules nobody confirmed; the timer decides what becomes
    of them. One the timer has missed (a reboot kills it; `OVERDUE_GRACE` past its deadline)
    is reverted here, by the daemon. The caller holds the lock."""
    now = time.time() if now is None else now
    try:
        pending = read_pending()
    except PendingUnreadable as exc:  # still a pending change: hold, and say why
        return f"an unconfirmed apply may be pending, and its record is unreadable ({exc})"
    if pending is None:
        return None
    if now > pending.deadline + OVERDUE_GRACE:
        revert_now(pending, "daemon (the timer missed the deadline)")
        return None
    return (f"waiting for an unconfirmed apply by {pending.by} (reverts in "
            f"{max(0.0, pending.deadline - now):.0f} s unless `fwsync confirm`)")


def reverted_hold(rules_digest: str) -> str | None:
    """Why the daemon must not apply these rules (valid, digest `rules_digest`), or None: they
    are the ones an unconfirmed apply wrote and that were reverted. Applying them again would
    undo the revert the operator relied on; they wait for an edit or an `fwsync apply`."""
    record = read_revert_record()
    if record is not None and record.get("hold") and record.get("rules_digest") == rules_digest:
        return ("the rules on disk are the ones an unconfirmed apply wrote, reverted at "
                f"{time.strftime('%H:%M:%S', time.localtime(record.get('reverted_at', 0)))}; "
                "not applied again until they change or `fwsync apply` is run")
    return None


def pending_refusal(now: float | None = None) -> str | None:
    """Why an apply must not run now, or None. While a change waits for confirmation, any
    apply is refused, with `--confirm-within` or without: its revert would put back the
    kernel from before the first one and silently undo the second, and a plain apply cannot
    mean "confirm" (that is `fwsync confirm`, said out loud)."""
    now = time.time() if now is None else now
    try:
        pending = read_pending()
    except PendingUnreadable as exc:
        return f"an unconfirmed apply may be pending ({exc})"
    if pending is None:
        return None
    left = pending.deadline - now
    return (f"an apply by {pending.by} at "
            f"{time.strftime('%H:%M:%S', time.localtime(pending.applied_at))} is waiting for "
            f"confirmation (reverts in {max(0.0, left):.0f} s): `fwsync confirm` keeps it, "
            "`fwsync revert-pending` puts back what was there before; then apply again")
