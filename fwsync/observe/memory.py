"""What Docker last reported when fwsync enforced rules for it, kept on disk.

With Docker unreachable (its socket gone, dockerd stopped or hung), an apply, a plan and a
daemon started then build the rules from this instead of from nothing: a `deny ... to
container` rule and the bridges Docker had named stay in the kernel (core/observed.py,
as_remembered). Written after every apply and reconcile that succeeded, whole to a temporary
file and renamed over, so a reader never sees half of it.

/var/lib/fwsync/docker.json by default (it must outlive a reboot: at boot fwsync starts before
Docker, and the containers come back with the ports they had); FWSYNC_DOCKER_STATE overrides it.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from fwsync.core.observed import DockerState
from fwsync.readfile import read_limited, write_json

if TYPE_CHECKING:
    from pydantic import TypeAdapter

DEFAULT_MEMORY = Path("/var/lib/fwsync/docker.json")
FORMAT_VERSION = 1
MAX_BYTES = 64 << 20  # a state of ~100k published ports; anything bigger is not ours


def memory_path() -> Path:
    return Path(os.environ.get("FWSYNC_DOCKER_STATE") or DEFAULT_MEMORY)


def remember(state: DockerState, path: Path | None = None) -> str | None:
    """Keep `state` (a fresh observation, or `DockerState()` when Docker has never answered);
    an error message when it cannot be written (the apply itself stands)."""
    path = path or memory_path()
    data = {
        "format_version": FORMAT_VERSION, "seen_at": state.seen_at,
        "ports": [{**asdict(p), "networks": list(p.networks)} for p in state.ports],
        "extra_bridges": [{**asdict(b), "subnets": list(b.subnets)}
                          for b in state.extra_bridges],
        "containers": list(state.containers), "firewall_backend": state.firewall_backend,
        "version": state.version, "services": list(state.services),
        "swarm": None if state.swarm is None else asdict(state.swarm),
        "networks": [{"name": n.name, "bridge": n.bridge,
                      "gateway_modes": [list(m) for m in n.gateway_modes],
                      "subnets": list(n.subnets),
                      "trusted_host_interfaces": list(n.trusted_host_interfaces)}
                     for n in state.networks],
    }
    exc = write_json(path, data)
    return None if exc is None else \
        f"cannot keep what Docker reported in {path}: {exc.strerror or exc}"


def recall(path: Path | None = None) -> DockerState | None:
    """What `remember` kept, or None when there is nothing usable (no file, not fwsync's
    format, a value of the wrong type): then fwsync knows nothing of Docker, and says so."""
    path = path or memory_path()
    try:
        data = json.loads(read_limited(path, MAX_BYTES, "fwsync's Docker memory"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        return None
    # Only what `remember` writes: a key the file should not have (error, stale, notes) is not
    # taken from it.
    fields = {k: data[k] for k in _WRITTEN if k in data}
    if any(k not in fields for k in _WRITTEN if k != "networks"):  # networks: added in format 1
        return None  # cut short: a default would stand for what Docker had said
    # pydantic (imported here only: this is read only when Docker could not be asked) checks
    # every field against DockerState's own annotations, Literals included, so a file edited by
    # hand or cut short is no memory rather than a wrong one.
    from pydantic import ValidationError

    try:
        return _adapter().validate_python(fields)
    except ValidationError:
        return None


_WRITTEN = ("seen_at", "ports", "extra_bridges", "containers", "firewall_backend", "version",
            "swarm", "services", "networks")


@functools.cache
def _adapter() -> TypeAdapter[DockerState]:
    from pydantic import TypeAdapter

    return TypeAdapter(DockerState)
