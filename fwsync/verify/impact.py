"""A plan's impact on real clients: each client the kernel tracks a connection for to a published
port (observe/conntrack.py), asked of what the kernel enforces now (fwsync's objects as the plan
read them, the verifier's evaluator: verify/answer.py, as `explain` asks it) and of the new
rules (core/explain's decide, `explain`'s own answer). Where the two differ, the plan changes
what that client gets. Pure given the flows and the kernel's listing.

What it cannot see: conntrack holds recent flows only, and a connection the current rules
refused left no entry (its first packet was dropped). So a client a plan newly *admits* is seen
only while a connection it made before it was refused is still tracked (a closed one: about two
minutes); the plan impact of an allow is otherwise unknown until logging (issue 20) records
refused clients.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fwsync.core.diff import State
from fwsync.core.explain import Connection, decide
from fwsync.core.exposure_report import through_docker_proxy
from fwsync.core.matching import IPAddress
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.core.ruleset import Ruleset
from fwsync.observe.conntrack import Flow
from fwsync.verify.answer import kernel_answer
from fwsync.verify.kernel import Reading

ADMITS = ("allow", "limit", "unjudged")  # unjudged: fwsync holds nothing, Docker admits it
REFUSES = ("deny", "reject")
EVIDENCE = ("connections the kernel tracks now (conntrack: open ones, and closed ones for about "
            "two minutes), not a history; a connection the current rules refused left none, so "
            "a client this plan newly admits shows only if it connected before it was refused")


@dataclass(frozen=True, slots=True)
class ClientChange:
    change: str  # refuses | admits
    source: IPAddress
    dest: IPAddress  # the address it dialled
    binding: PublishedPort
    connections: int  # tracked now
    before: str  # the kernel's verdict now
    after: str  # the new rules' verdict
    origin: str  # what decides under the new rules (FILE:LINE, a protection, the default)


@dataclass(frozen=True, slots=True)
class Impact:
    changes: tuple[ClientChange, ...]
    clients: int  # (source, binding) pairs seen
    flows: int  # tracked connections to published ports
    evidence: str = EVIDENCE
    unread: str | None = None  # why nothing could be said (conntrack not readable)


def _binding(flow: Flow, ports: Sequence[PublishedPort]) -> PublishedPort | None:
    """The binding a flow's original destination hits: one on its very address first."""
    fam = flow.source.version
    fitting = [p for p in ports if p.proto == flow.proto and p.host_port == flow.dport
               and p.family == fam]
    for p in fitting:
        if not p.all_addresses and p.host_ip == str(flow.dest):
            return p
    return next((p for p in fitting if p.all_addresses), None)


def plan_impact(ruleset: Ruleset, docker: DockerState, backend: str, held: State,
                flows: Iterable[Flow]) -> Impact:
    """Which tracked clients of published ports the new rules (`ruleset`) treat otherwise than
    the kernel does now (`held`: the chosen backend's objects as read; empty: fwsync holds
    nothing, and Docker admits everyone)."""
    seen: dict[tuple[IPAddress, IPAddress, PublishedPort], int] = {}
    count = 0
    for flow in flows:
        binding = _binding(flow, docker.ports)
        if binding is None:
            continue
        count += 1
        key = (flow.source, flow.dest, binding)
        seen[key] = seen.get(key, 0) + 1
    reading = Reading(backend, held) if held else None
    changes = []
    for (source, dest, binding), n in seen.items():
        after = decide(ruleset, Connection(source, binding.host_port, binding.proto,
                                           dest), dest)
        before = "unjudged" if reading is None else kernel_answer(
            ruleset, reading, binding, source, dest, through_docker_proxy(binding))
        before = before.split(":", 1)[0]  # "unreadable: why" → unreadable
        if before in ADMITS and after.action in REFUSES:
            changes.append(ClientChange("refuses", source, dest, binding, n, before,
                                        after.action, after.origin))
        elif before in REFUSES and after.action in ADMITS:
            changes.append(ClientChange("admits", source, dest, binding, n, before,
                                        after.action, after.origin))
    changes.sort(key=lambda c: (c.change != "refuses", -c.connections, str(c.source)))
    return Impact(tuple(changes), len(seen), count)
