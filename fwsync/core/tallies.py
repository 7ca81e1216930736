"""Counts per published port: before each decision, a rule with the decision's own match
narrowed to one published port (protocol and original destination port) and a counter, no
verdict. It counts the new connections to that port the decision right after it decides (only
a verdict ends a connection's walk, so what the tally counts goes on to that decision), which
the decision's own counter, over all the ports it matches, cannot say. Pure: which tallies a
ruleset gets and how they are named; the renderers write them, core/counts reads them back.

A tally's comment is its label (`fwsync port ipv4 5432/tcp`) followed by its decision's own
comment, so that core/counts places it by the same rule origins. A merged run (core/merge) has
no tallies: its one kernel rule stands for several policy rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

from fwsync.core.observed import PublishedPort
from fwsync.core.ruleset import L4, Family, Match
from fwsync.rules.model import PortRange

TALLY_PREFIX = "fwsync port "
TALLY_VERDICT = "tally"  # a Decided that is a tally: counted for a port, decided by the next rule
Published = tuple[Family, L4, int]  # what a tally is keyed by: family, protocol, host port


def published(ports: Iterable[PublishedPort]) -> tuple[Published, ...]:
    """The distinct (family, protocol, host port) Docker publishes, sorted."""
    return tuple(sorted({(6 if p.family == 6 else 4, p.proto, p.host_port) for p in ports}))


# At most this many per-port counters in all (both families): their number is the decisions
# times the published ports each can decide for, and whoever reaches Docker's socket chooses
# how many ports there are. Beyond it there are none, and status counts per rule only.
MAX_TALLIES = 4096


def counted_ports(matches: Iterable[Match], ports: tuple[Published, ...]
                  ) -> tuple[tuple[Published, ...], int]:
    """(the ports to count, how many counters they take) for decisions with these matches
    (the default's included): no port when they would take more than MAX_TALLIES."""
    needed = sum(1 for m in matches for _ in tallies(m, ports))
    return (ports, needed) if needed <= MAX_TALLIES else ((), needed)


def label(family: Family, proto: str, port: int) -> str:
    return f"{TALLY_PREFIX}ipv{family} {port}/{proto}"


def port_key(family: int, proto: str, port: int) -> str:
    """How status names the port a tally counts: `ipv4 5432/tcp`."""
    return f"ipv{family} {port}/{proto}"


def tallies(match: Match, ports: Iterable[Published]) -> Iterator[tuple[Match, str]]:
    """(the tally's match, its label) for each published port the decision's match can meet:
    its family, its protocol (or any), its port range (or any)."""
    for family, proto, port in ports:
        if family != match.family or match.proto not in (None, proto):
            continue
        if match.dport is not None and not match.dport.low <= port <= match.dport.high:
            continue
        yield replace(match, proto=proto, dport=PortRange(port, port)), label(family, proto, port)


def parse_tally(comment: str) -> tuple[str, str] | None:
    """(the port key, the decision's comment) of a tally's comment; None for any other."""
    if not comment.startswith(TALLY_PREFIX):
        return None
    family, _, rest = comment[len(TALLY_PREFIX):].partition(" ")
    port, _, decision = rest.partition(" ")
    if family not in ("ipv4", "ipv6") or "/" not in port:
        return None
    return f"{family} {port}", decision
