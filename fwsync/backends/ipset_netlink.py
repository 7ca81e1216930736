"""The kernel's ipsets — name, type, family, element count — asked over netlink directly.

What `ipset list -terse` prints, without starting a process: every read of the iptables backend
needs it (which of fwsync's sets exist, and whether each holds as many elements as its name
says), and on the daemon's path from a Docker event to the kernel a process start is a good
part of the time on a busy machine. One IPSET_CMD_LIST dump with the "header only" flag answers
in well under a millisecond and lists no element. When netlink cannot be asked (no ip_set
module, an old kernel, a refusal), the caller runs `ipset list -terse` as before.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from fwsync.backends.netlink import (
    HEADER,
    NFGEN,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    OnMessage,
    attr,
    attrs,
    cstring,
    dump,
)

NFNL_SUBSYS_IPSET = 6
IPSET_CMD_LIST = 7
IPSET_PROTOCOL = 7  # ipset 7.x and kernels since 4.x; 6 is the oldest a kernel takes
NLA_F_NET_BYTEORDER = 0x4000
# Attributes (include/uapi/linux/netfilter/ipset/ip_set.h)
ATTR_PROTOCOL, ATTR_SETNAME, ATTR_TYPENAME, ATTR_REVISION, ATTR_FAMILY = 1, 2, 3, 4, 5
ATTR_FLAGS, ATTR_DATA = 6, 7
ATTR_ELEMENTS = 24  # in DATA: the number of elements (IPSET_ATTR_ELEMENTS)
FLAG_LIST_HEADER = 1 << 2  # IPSET_FLAG_LIST_HEADER: the headers, no member
NFPROTO_IPV4, NFPROTO_IPV6 = 2, 10


@dataclass(frozen=True)
class IpsetHeader:
    type: str  # "hash:net", ...
    family: str  # "inet", "inet6", or "" for a type without one
    elements: int | None  # None: the kernel did not say


def request(seq: int = 1) -> bytes:
    body = NFGEN.pack(socket.AF_INET, 0, 0) + attr(ATTR_PROTOCOL, bytes([IPSET_PROTOCOL])) \
        + attr(ATTR_FLAGS | NLA_F_NET_BYTEORDER, struct.pack(">I", FLAG_LIST_HEADER))
    kind = (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_LIST
    return HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP,
                       seq, 0) + body


def _into(sets: dict[str, IpsetHeader]) -> OnMessage:
    """A list dump's messages, as name → header into `sets`."""
    def take(kind: int, found: dict[int, bytes]) -> None:
        if kind != (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_LIST:
            return
        name = cstring(found.get(ATTR_SETNAME, b""))
        if not name:
            return
        family = found.get(ATTR_FAMILY, b"\0")[0]
        inner = found.get(ATTR_DATA, b"")
        count = attrs(inner, 0, len(inner)).get(ATTR_ELEMENTS)
        sets[name] = IpsetHeader(
            type=cstring(found.get(ATTR_TYPENAME, b"")),
            family={NFPROTO_IPV4: "inet", NFPROTO_IPV6: "inet6"}.get(family, ""),
            elements=struct.unpack(">I", count[:4])[0] if count and len(count) >= 4 else None)

    return take


def ipset_headers() -> dict[str, IpsetHeader] | None:
    """Every ipset in this network namespace, or None when netlink cannot be asked here (the
    caller then runs `ipset list -terse`). No ip_set module loaded means no ipset at all."""
    if not Path("/sys/module/ip_set").exists():
        return {}
    sets: dict[str, IpsetHeader] = {}
    try:
        dump(request(), _into(sets), ack_ends=True)
    except (OSError, struct.error, IndexError):
        return None
    return sets
