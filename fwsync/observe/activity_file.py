"""The daemon's samples of each rule's use (core/activity), kept on disk for `status`.

/var/lib/fwsync/rule-activity.json by default: it must outlive the daemon and a reboot, or a
rule unused for a month could never be told apart from one watched for a minute;
FWSYNC_RULE_ACTIVITY overrides it. Written whole to a temporary file and renamed over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fwsync.core.activity import Activity, Key
from fwsync.readfile import read_limited, write_json

DEFAULT_ACTIVITY = Path("/var/lib/fwsync/rule-activity.json")
FORMAT_VERSION = 1
MAX_BYTES = 16 << 20


def activity_path() -> Path:
    return Path(os.environ.get("FWSYNC_RULE_ACTIVITY") or DEFAULT_ACTIVITY)


def read_activity(path: Path | None = None) -> dict[Key, Activity]:
    """What was sampled, or nothing when there is no file or it is not one of fwsync's: the
    counts themselves are the kernel's, this only adds when they last grew."""
    path = path or activity_path()
    try:
        data: Any = json.loads(read_limited(path, MAX_BYTES, "the rule activity file"))
        if data.get("format_version") != FORMAT_VERSION:
            return {}
        return {(str(r["origin"]), str(r["verdict"])): Activity(
                    int(r["connections"]), float(r["since"]),
                    None if r["last"] is None else float(r["last"]))
                for r in data["rules"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write_activity(activity: dict[Key, Activity], path: Path | None = None) -> str | None:
    """Keep `activity`; an error message when it cannot be written."""
    path = path or activity_path()
    data = {"format_version": FORMAT_VERSION,
            "rules": [{"origin": o, "verdict": v, "connections": a.connections,
                       "since": a.since, "last": a.last}
                      for (o, v), a in sorted(activity.items())]}
    exc = write_json(path, data)
    return None if exc is None else f"cannot write {path}: {exc.strerror or exc}"
