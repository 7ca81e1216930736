"""The small file the daemon rewrites after every reconcile, for `fwsync status` to show.

/run/fwsync/daemon.json by default (FWSYNC_DAEMON_STATE overrides it). Written whole to a
temporary file and renamed over, so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from fwsync.readfile import read_json_object

DEFAULT_STATE = Path("/run/fwsync/daemon.json")
FORMAT_VERSION = 1


def state_path() -> Path:
    return Path(os.environ.get("FWSYNC_DAEMON_STATE") or DEFAULT_STATE)


def write_state(data: dict[str, Any], path: Path | None = None) -> None:
    path = path or state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"format_version": FORMAT_VERSION, **data}, indent=2) + "\n")
    os.replace(tmp, path)


def read_state(path: Path | None = None) -> dict[str, Any] | None:
    path = path or state_path()
    data = read_json_object(path, 1 << 20, "the daemon's state file")
    if data is None:
        return None
    data["running"] = _running(data.get("pid"))
    data["path"] = str(path)
    return data


def _running(pid: Any) -> bool:
    """The pid is alive and is an fwsync (pids are reused)."""
    if not isinstance(pid, int):
        return False
    with contextlib.suppress(OSError):
        return b"fwsync" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def _ago(then: Any, now: float) -> str:
    if not isinstance(then, int | float):
        return "?"
    seconds = max(0.0, now - then)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def describe(data: dict[str, Any] | None, now: float | None = None) -> list[str]:
    """Lines for `fwsync status`."""
    now = time.time() if now is None else now
    where = state_path()
    if data is None:
        return [f"Daemon: not running (no state in {where})"]
    pid = data.get("pid")
    if not data.get("running"):
        head = f"Daemon: not running (pid {pid} has exited; last state written " \
               f"{_ago(data.get('updated'), now)})"
    else:
        head = f"Daemon: running (pid {pid}, since {_ago(data.get('started'), now)}); " \
               f"Docker events {'followed' if data.get('docker_connected') else 'NOT followed'}"
    lines = [head]
    last = data.get("last_reconcile")
    if isinstance(last, dict):
        result = last.get("result", "?")
        what = ""
        if result == "applied":
            what = f" (+{last.get('add', 0)} -{last.get('remove', 0)} lines in " \
                   f"{last.get('objects', 0)} objects)"
        lines.append(f"  last reconcile {_ago(last.get('at'), now)}: {result}{what} after "
                     f"{last.get('trigger', '?')}; {last.get('duration_ms', '?')} ms")
        for diag in last.get("diagnostics", [])[:5]:
            lines.append(f"  rules: {diag}")
        if last.get("error"):
            lines.append(f"  error: {last['error']}")
    if data.get("drift_repairs"):
        lines.append(f"  drift repaired {data['drift_repairs']} times, last "
                     f"{_ago(data.get('last_drift'), now)}")
    return lines
