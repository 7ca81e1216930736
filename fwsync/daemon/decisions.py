"""Logged decisions: what the kernel copied to fwsync's NFLOG group (observe/nflog.py), named
with the rule that decided and the container it would have reached, and written where people
and tools read them:

- the daemon's own log (the journal under systemd), one line each in the form ufw's kernel
  lines have (`[FWSYNC BLOCK] IN=eth0 OUT= SRC=... DST=... PROTO=TCP SPT=... DPT=...`), which
  fail2ban (monitoring/fail2ban/) and CrowdSec's and logwatch's iptables parsers read; DST and
  DPT are what the client dialled (conntrack's original tuple), not the container's address
  after Docker's DNAT;
- a JSON-lines file (/var/log/fwsync/decisions.jsonl, FWSYNC_DECISIONS), which `fwsync log`
  reads: one object per decision with time, src, sport, host_ip, port, proto, container,
  verdict, origin and in.

The rule is named from the log prefix (core/logging_rules: the policy's tag and the rule's
index), and only when the tag is the one of the policy the daemon enforces: a line the kernel
wrote for other rules (an apply in between) says so instead of naming the wrong one.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fwsync.core.audit import would
from fwsync.core.logging_rules import LIMIT_REFUSED, log_tag, parse_prefix
from fwsync.core.observed import PublishedPort
from fwsync.observe.nflog import Logged
from fwsync.readfile import read_limited
from fwsync.rules.model import Policy

DEFAULT_DECISIONS = Path("/var/log/fwsync/decisions.jsonl")
ROTATE_AT = 16 << 20  # bytes: then the file becomes `.1` (the one before is dropped)
# ufw's words; a `limit` rule's refusal over its rate is ufw's `[UFW LIMIT BLOCK]`.
_WORDS = {"deny": "BLOCK", "reject": "BLOCK", "allow": "ALLOW", LIMIT_REFUSED: "LIMIT BLOCK",
          # What an audited rule would refuse (core/audit), as ufw's `[UFW AUDIT]` lines: no
          # fail2ban filter counts them, since nothing was refused.
          **{would(a): "AUDIT" for a in ("deny", "reject", "limit")}}


def decisions_path() -> Path:
    return Path(os.environ.get("FWSYNC_DECISIONS") or DEFAULT_DECISIONS)


@dataclass(frozen=True, slots=True)
class LogDecision:
    time: float
    src: str
    sport: int | None
    host_ip: str  # what the client dialled (before DNAT)
    port: int | None
    proto: str
    container: str | None  # who publishes that port, as status names it
    # deny | reject | allow | limit (refused over a limit rule's rate); would-deny,
    # would-reject, would-limit: what an audited rule saw, deciding nothing (core/audit)
    verdict: str
    origin: str  # FILE:LINE, the default's FILE:LINE, or why it cannot be named
    indev: str | None
    dest: str  # the packet's own destination (after DNAT: the container's address)
    dport: int | None
    # Where host_ip and port come from: conntrack (what was dialled), packet (its own
    # destination), docker (the binding that leads to the container: a 0.0.0.0 one's address)
    dialled_from: str = "packet"


def _binding(ports: Sequence[PublishedPort], proto: str, addr: str, port: int | None
             ) -> PublishedPort | None:
    if port is None:
        return None
    fam = 6 if ":" in addr else 4
    fitting = [p for p in ports if p.proto == proto and p.host_port == port and p.family == fam]
    return next((p for p in fitting if p.host_ip == addr), None) or next(
        (p for p in fitting if p.all_addresses), None)


def decision_of(logged: Logged, policy: Policy | None, ports: Sequence[PublishedPort]
                ) -> LogDecision | None:
    """A packet of fwsync's NFLOG group as a decision; None for a prefix not fwsync's."""
    parsed = parse_prefix(logged.prefix)
    if parsed is None:
        return None
    tag, index, verdict = parsed
    if policy is None or tag != log_tag(policy):
        origin = "unknown: logged by rules other than those enforced now"
    elif index is None:
        origin = str(policy.default_origin) if policy.default_origin else "built-in default"
    elif index < len(policy.rules):
        origin = str(policy.rules[index].origin)
    else:
        origin = "unknown: no such rule"
    host, port, how = _dialled(logged, ports)
    binding = _binding(ports, logged.proto, host, port)
    return LogDecision(logged.time, str(logged.source), logged.sport, host, port,
                       logged.proto, binding.owner if binding else None, verdict, origin,
                       logged.indev, str(logged.dest), logged.dport, how)


def _dialled(logged: Logged, ports: Sequence[PublishedPort]) -> tuple[str, int | None, str]:
    """(address, port, from where) the client dialled. Conntrack's original tuple when the
    kernel attached it (NFULA_CT: CONFIG_NETFILTER_NETLINK_GLUE_CT); else the packet's own
    destination when it is a binding's (the INPUT path: docker-proxy's, no DNAT); else the
    binding whose DNAT leads to the packet's destination (the container's address and port):
    on a 0.0.0.0 or :: binding the host address dialled is then not known."""
    if logged.orig_dest is not None:
        return str(logged.orig_dest), logged.orig_dport, "conntrack"
    dest = str(logged.dest)
    fam = 6 if ":" in dest else 4
    behind = [p for p in ports if p.proto == logged.proto and p.container_port == logged.dport
              and dest in p.container_addrs and p.family == fam]
    if len({(p.host_ip, p.host_port) for p in behind}) == 1:
        return behind[0].host_ip, behind[0].host_port, "docker"
    return dest, logged.dport, "packet"  # not DNATed (docker-proxy's), or several lead there


def _safe(text: str | None) -> str:
    """A value in a key=value line: no spaces or control characters (a container's name is
    its creator's choice)."""
    if not text:
        return ""
    return "".join(c if c.isprintable() and not c.isspace() and c != "=" else "_" for c in text)


def ufw_line(d: LogDecision) -> str:
    """`[FWSYNC BLOCK] IN=... OUT= SRC=... DST=... PROTO=TCP SPT=... DPT=... ...`: the fields
    ufw's kernel lines have, with DST and DPT as the client dialled them."""
    parts = [f"[FWSYNC {_WORDS.get(d.verdict, d.verdict.upper())}]", f"IN={_safe(d.indev)}",
             "OUT=", f"SRC={d.src}", f"DST={d.host_ip}", f"PROTO={d.proto.upper()}"]
    if d.sport is not None:
        parts.append(f"SPT={d.sport}")
    if d.port is not None:
        parts.append(f"DPT={d.port}")
    parts += [f"CONTAINER={_safe(d.container) or '-'}", f"RULE={_safe(d.origin)}"]
    return " ".join(parts)


def decision_json(d: LogDecision) -> dict[str, Any]:
    data = asdict(d)
    data["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(d.time)) + \
        f".{int(d.time * 1000) % 1000:03d}Z"
    data["in"] = data.pop("indev")
    return data


class DecisionFile:
    """The JSON-lines file, appended to and rotated at ROTATE_AT."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or decisions_path()

    def append(self, decisions: Sequence[LogDecision]) -> str | None:
        """Write them; an error message when the file cannot be written."""
        if not decisions:
            return None
        text = "".join(json.dumps(decision_json(d)) + "\n" for d in decisions)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if self.path.stat().st_size >= ROTATE_AT:
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            return f"cannot write {self.path}: {exc}"
        return None


def read_decisions(path: Path | None = None, since: float | None = None
                   ) -> Iterator[dict[str, Any]]:
    """The decisions kept (the rotated file first), oldest first, from `since` (Unix time)."""
    path = path or decisions_path()
    for p in (path.with_name(path.name + ".1"), path):
        try:
            text = read_limited(p, 2 * ROTATE_AT, "the decisions file").decode(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash mid-write
            if since is None or _time_of(data) >= since:
                yield data


def _time_of(data: dict[str, Any]) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(data["time"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return 0.0

