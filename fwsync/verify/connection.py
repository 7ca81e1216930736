"""One connection, as the kernel's rules see it on fwsync's paths. Plain data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fwsync.core.ruleset import L4, Family

Path = Literal["dnat", "direct", "input"]


@dataclass(frozen=True)
class Connection:
    family: Family  # 4 | 6
    proto: L4  # "tcp" | "udp"
    saddr: str  # the client
    daddr: str  # the ORIGINAL destination (what the client dialled)
    dport: int  # the original destination port
    sport: int = 40000
    iif: str = "eth0"  # arriving interface
    oif: str | None = "docker0"  # leaving interface on the forward path; None on the input path
    # The leaving interface's kind (`meta oifkind`: "bridge", "veth", ...; "" for a device with
    # none); nothing leaves on the input path.
    oifkind: str = "bridge"
    # dnat: through a published port (DNATed), forward hook; direct: routed to a container
    # address without DNAT, forward hook; input: to a host port docker-proxy serves, input hook.
    path: Path = "dnat"
    # Whether the destination is an address of this host (addrtype LOCAL / fib daddr type
    # local): true on the input path.
    local: bool = False
    new: bool = True  # conntrack state NEW
    # On the dnat path: the address Docker's DNAT sends the connection to (the container's own,
    # the binding's PublishedPort.container_addrs); None: not known.
    dnat_daddr: str | None = None
    # On the input path: the cgroup of the process whose socket serves it, as nft's `socket
    # cgroupv2` names it, (level, path below /sys/fs/cgroup): dockerd's for docker-proxy
    # (Ruleset.proxy_cgroup). None: not known.
    socket_cgroup: tuple[int, str] | None = None

    @property
    def packet_daddr(self) -> str | None:
        """The destination address the packet carries where fwsync's rules see it: after
        Docker's DNAT on the dnat path (the container's address: None when not known)."""
        return self.dnat_daddr if self.path == "dnat" else self.daddr

    @property
    def packet_dport(self) -> int | None:
        return None if self.path == "dnat" else self.dport

    @property
    def ct_states(self) -> frozenset[str]:
        """conntrack's state and status bits, as `--ctstate` names them."""
        states = {"NEW"} if self.new else {"ESTABLISHED"}
        if self.path == "dnat":
            states.add("DNAT")
        return frozenset(states)
