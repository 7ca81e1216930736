"""The two small records of an apply that must be confirmed, for the revert, `confirm`,
`status` and the daemon.

- The pending change (/var/lib/fwsync/pending-apply.json, FWSYNC_PENDING overrides it): written
  under the apply lock before the apply writes anything, removed by `fwsync confirm` or by the
  revert. It holds fwsync's objects as every backend held them before the apply (a backend's
  snapshot(): its lines and its own encoding, JSON both), so the revert needs nothing else.
- The last revert (last-revert.json beside it): what the revert did, for `status`, and whether
  the daemon holds off the rules that were reverted.

In /var/lib, not /run: a pending change outlives a reboot, and the daemon that starts after it
reverts what is overdue instead of making the unconfirmed rules the truth (daemon/loop.py).
Both files are written whole and renamed over (readfile.write_json)."""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fwsync.core.diff import Desired, State
from fwsync.readfile import read_json_object, read_limited, write_json

DEFAULT_PENDING = Path("/var/lib/fwsync/pending-apply.json")
FORMAT_VERSION = 1
# A snapshot holds every element of every set: 100k addresses are a few MB of JSON.
MAX_BYTES = 256 << 20


def pending_path() -> Path:
    return Path(os.environ.get("FWSYNC_PENDING") or DEFAULT_PENDING)


def revert_record_path() -> Path:
    return pending_path().with_name("last-revert.json")


@dataclass(frozen=True)
class Snapshot:
    """One backend's objects as the kernel held them before the apply (Backend.snapshot())."""

    backend: str
    state: State
    payload: object = None  # nftables: the table's JSON objects; iptables: None

    def desired(self) -> Desired:
        return Desired(self.state, self.payload)


@dataclass(frozen=True)
class Pending:
    token: str  # names the timer and proves a revert is for this change and no later one
    backend: str  # the backend the apply wrote
    applied_at: float  # wall clock
    deadline: float  # wall clock: reverted after this unless confirmed
    by: str  # who applied (user, sudo user, ssh client)
    rules: str  # the rules path the apply read
    rules_digest: str  # Policy.digest of those rules: the daemon holds off them once reverted
    snapshots: tuple[Snapshot, ...]
    # How the revert is timed: {"kind": "systemd", "unit": ...} or {"kind": "process",
    # "pid": ..., "start": ...} (timer.py); empty until the timer runs.
    timer: dict[str, Any] = field(default_factory=dict)


def who() -> str:
    """Who runs this, for the log and status: the user, the one behind sudo, the SSH client."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    parts = [user]
    if (sudo := os.environ.get("SUDO_USER")) and sudo != user:
        parts.append(f"via sudo from {sudo}")
    if ssh := os.environ.get("SSH_CONNECTION", "").split()[:1]:
        parts.append(f"ssh from {ssh[0]}")
    return " ".join(parts)


def pending_json(p: Pending) -> dict[str, Any]:
    data = asdict(p)
    data["snapshots"] = [{"backend": s.backend, "state": {k: list(v) for k, v in s.state.items()},
                          "payload": s.payload} for s in p.snapshots]
    return {"format_version": FORMAT_VERSION, **data}


def pending_from(data: Any) -> Pending:
    """The record as written by pending_json; ValueError, KeyError or TypeError when it is not
    one (lines come back as tuples, as a backend's read gives them: the diff compares them)."""
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise ValueError("not a pending-apply record of this fwsync")
    snapshots = tuple(
        Snapshot(str(s["backend"]), {str(k): tuple(str(line) for line in v)
                                     for k, v in s["state"].items()}, s["payload"])
        for s in data["snapshots"])
    return Pending(token=str(data["token"]), backend=str(data["backend"]),
                   applied_at=float(data["applied_at"]), deadline=float(data["deadline"]),
                   by=str(data["by"]), rules=str(data["rules"]),
                   rules_digest=str(data["rules_digest"]),
                   snapshots=snapshots,
                   timer=dict(data.get("timer") or {}))


def write_pending(p: Pending, path: Path | None = None) -> OSError | None:
    return write_json(path or pending_path(), pending_json(p))


class PendingUnreadable(Exception):
    """A pending-apply file is there but cannot be read: it still means "pending"."""


def read_pending(path: Path | None = None) -> Pending | None:
    """The pending change; None when there is none. A file that is there but unreadable raises
    PendingUnreadable: treating it as "nothing pending" would let an apply or the daemon go
    ahead while a change waits for confirmation."""
    path = path or pending_path()
    try:
        raw = read_limited(path, MAX_BYTES, "the pending-apply record")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PendingUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return pending_from(json.loads(raw))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PendingUnreadable(f"{path} is not a pending-apply record ({exc})") from None


def pending_exists(path: Path | None = None) -> bool:
    """Cheap (one stat): the daemon's drift tick asks it every second."""
    return (path or pending_path()).exists()


def remove_pending(path: Path | None = None) -> None:
    (path or pending_path()).unlink(missing_ok=True)


def write_revert_record(data: dict[str, Any], path: Path | None = None) -> OSError | None:
    return write_json(path or revert_record_path(), {"format_version": FORMAT_VERSION, **data})


def read_revert_record(path: Path | None = None) -> dict[str, Any] | None:
    return read_json_object(path or revert_record_path(), 1 << 20, "the last revert record")


def release_hold(path: Path | None = None) -> None:
    """An apply went through: the daemon stops holding off the rules that were reverted (the
    operator has chosen the rules in the kernel now). The record stays, for status."""
    data = read_revert_record(path)
    if data is not None and data.get("hold"):
        data["hold"] = False
        # Not written: the daemon holds off until the rules change; nothing worse.
        write_revert_record({k: v for k, v in data.items() if k != "format_version"}, path)
