"""Docker's published bindings as runs of consecutive host ports. Pure.

`docker run -p 10000-40000:10000-40000/udp` makes 30,001 bindings per family, which select
exactly what one port range selects: the builder expands rules over runs, not bindings, so one
media server is one kernel rule per family, protocol and host address instead of 30k (which
pushed any policy naming it, or none, over the kernel-rule limit)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fwsync.core.observed import PublishedPort
from fwsync.rules.model import PortRange


@dataclass(frozen=True)
class BindingRun:
    """Bindings that differ only in their host (and container) port, with consecutive host
    ports: one container's (or service's), one family, protocol and host address."""

    first: PublishedPort  # the lowest host port's binding: who, where, which protocol
    ports: PortRange  # the host ports, first.host_port to the last one
    bindings: tuple[PublishedPort, ...]

    @property
    def family(self) -> int:
        return self.first.family


def _key(p: PublishedPort) -> tuple[object, ...]:
    return (p.host_ip, p.proto, p.container, p.container_id, p.image, p.networks, p.service,
            p.mode, p.routed)


def binding_runs(ports: Iterable[PublishedPort]) -> tuple[BindingRun, ...]:
    """The runs, in the order of their first bindings (the order bindings sort in, so single
    bindings come out as before)."""
    groups: dict[tuple[object, ...], list[PublishedPort]] = {}
    for p in ports:
        groups.setdefault(_key(p), []).append(p)
    runs: list[BindingRun] = []
    for members in groups.values():
        members.sort(key=lambda p: p.host_port)
        start = 0
        for i in range(1, len(members) + 1):
            if i == len(members) or members[i].host_port > members[i - 1].host_port + 1:
                part = members[start:i]
                runs.append(BindingRun(part[0], PortRange(part[0].host_port, part[-1].host_port),
                                       tuple(part)))
                start = i
    runs.sort(key=lambda r: r.first)
    return tuple(runs)


def covered(ports: PortRange, wanted: Sequence[PortRange]) -> list[PortRange]:
    """The parts of `ports` that `wanted` (a rule's destination ports; empty: all) covers."""
    if not wanted:
        return [ports]
    parts = sorted((max(ports.low, w.low), min(ports.high, w.high)) for w in wanted
                   if w.low <= ports.high and ports.low <= w.high)
    out: list[PortRange] = []
    for low, high in parts:
        if out and low <= out[-1].high + 1:
            if high > out[-1].high:
                out[-1] = PortRange(out[-1].low, high)
        else:
            out.append(PortRange(low, high))
    return out
