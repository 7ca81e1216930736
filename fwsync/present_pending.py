"""What `status` says of `apply --confirm-within`: a change waiting for `fwsync confirm`, and
the last one that was reverted (fwsync/rollout/pending.py keeps both)."""

from __future__ import annotations

import time
from typing import Any

from fwsync.rollout.pending import (
    PendingUnreadable,
    read_pending,
    read_revert_record,
)

# A revert is worth a line in status for a day; the record stays on disk after that.
RECENT_REVERT = 86400.0


def _clock(t: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t))) \
        if isinstance(t, int | float) else "?"


def rollout_status(now: float | None = None) -> tuple[list[str], dict[str, Any]]:
    """(lines for the text, the `rollout` object of `status --format json`)."""
    now = time.time() if now is None else now
    lines: list[str] = []
    data: dict[str, Any] = {"pending": None, "last_revert": None}
    try:
        pending = read_pending()
    except PendingUnreadable as exc:
        lines.append(f"an unconfirmed apply may be pending: {exc}")
        data["pending"] = {"error": str(exc)}
        pending = None
    if pending is not None:
        left = pending.deadline - now
        when = f"reverts in {left:.0f} s" if left >= 0 else \
            f"its revert is {-left:.0f} s overdue (the daemon reverts it 30 s after)"
        lines.append(f"unconfirmed apply by {pending.by} at {_clock(pending.applied_at)} "
                     f"({pending.rules}, {pending.backend}): {when} unless `fwsync confirm`")
        data["pending"] = {"by": pending.by, "rules": pending.rules, "backend": pending.backend,
                           "applied_at": pending.applied_at, "deadline": pending.deadline,
                           "seconds_left": round(left, 1), "rules_digest": pending.rules_digest,
                           "timer": pending.timer.get("kind")}
    record = read_revert_record()
    if record is not None:
        data["last_revert"] = {k: record.get(k) for k in (
            "by", "rules", "backend", "applied_at", "deadline", "reverted_at", "reverted_by",
            "result", "error", "hold")}
        at = record.get("reverted_at")
        if isinstance(at, int | float) and now - at < RECENT_REVERT:
            if record.get("result") == "reverted":
                lines.append(f"the unconfirmed apply by {record.get('by')} at "
                             f"{_clock(record.get('applied_at'))} was reverted at {_clock(at)}: "
                             "the kernel holds fwsync's objects as they were before it")
            else:
                lines.append(f"the revert of the unconfirmed apply by {record.get('by')} at "
                             f"{_clock(at)} FAILED: {record.get('error')}")
    return lines, data
