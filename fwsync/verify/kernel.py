"""The verdict fwsync's kernel objects give one connection, read from what the backend lists.

Input is a backend's `read()` State (fwsync/core/diff.py): for iptables the `iptables-save`
lines of fwsync's chains, its ipsets' elements and the jump object; for nftables the lines the
nftables backend prints from `nft -j list` for `table inet fwsync`. The lines are parsed by
this package (iptables.py, nftables.py), not by the renderers' code, and walked as the kernel
walks them (walk.py): from fwsync's entry (FWSYNC-FORWARD as reached from DOCKER-USER /
FWSYNC-INPUT from INPUT; the `forward` / `input` base chains) down through jumps, gotos and
returns to a verdict.

- "allow": fwsync lets it on (RETURN out of its chains, or accept).
- "deny" / "reject": dropped / rejected.
- "limit": a per-source rate meter decides: under the rate it is let on, over it refused; and
  so is a new source while the meter's table is full (hashlimit's `--hashlimit-htable-max`;
  nftables' set of sources, `update @seen { KEY }`, then `KEY != @seen drop`). Both ways an
  update of such a set can go are walked: the source taken in, and not (the set full).
- "unjudged": fwsync's chains do not look at it: not reached, left by a rule that steps
  aside (only the conntrack state or the arriving interface matched: not NEW, from lo; or the
  arriving interface with the source address: a Docker network's own subnet on its bridge),
  or the walk ran off the end of the entry chain.
- "unreadable: LINE": a line or expression the verifier does not understand was met before the
  verdict. Never a guess: callers treat it as a disagreement (fail closed).

Where an answer depends on what a connection's description leaves open (the destination after
Docker's DNAT, when the dnat path is not told the container's address) both outcomes are
walked: equal, that is the answer; different, the line is unreadable for this connection.
"""

from __future__ import annotations

from fwsync.core.diff import State
from fwsync.verify.connection import Connection
from fwsync.verify.iptables import IPT_FORWARD, IPT_INPUT, _IptSets, iptables_program
from fwsync.verify.nftables import (
    NFT_DORMANT,
    NFT_PREFIX,
    NFT_TABLE_KEY,
    _NftSets,
    nftables_program,
)
from fwsync.verify.walk import KernelVerdict, Program, run

__all__ = ["IPT_FORWARD", "IPT_INPUT", "NFT_DORMANT", "NFT_PREFIX", "NFT_TABLE_KEY",
           "KernelVerdict", "Reading", "kernel_verdict", "run"]

class Reading:
    """A backend's listing, parsed once for any number of connections: a family's chains once
    per path, each set once (agree.py asks hundreds of connections)."""

    def __init__(self, backend: str, state: State) -> None:
        self.backend, self.state = backend, state
        self._programs: dict[tuple[int, str], Program] = {}
        self._nft_sets = _NftSets(state)
        self._ipt_sets = {family: _IptSets(state, family) for family in (4, 6)}

    def program(self, family: int, path: str) -> Program:
        if self.backend == "iptables":
            key = (family, "input" if path == "input" else "forward")
            if key not in self._programs:
                self._programs[key] = iptables_program(self.state, family, path,
                                                       self._ipt_sets[family])
        elif self.backend == "nftables":
            key = (0, "input" if path == "input" else "forward")
            if key not in self._programs:
                self._programs[key] = nftables_program(self.state, key[1], self._nft_sets)
        else:
            return Program({}, None, frozenset(), error=f"backend {self.backend}")
        return self._programs[key]

    def verdict(self, conn: Connection) -> KernelVerdict:
        return run(self.program(conn.family, conn.path), conn)


def kernel_verdict(backend: str, state: State, conn: Connection) -> KernelVerdict:
    """What fwsync's objects, as the backend's read() lists them, do to this connection."""
    return Reading(backend, state).verdict(conn)
