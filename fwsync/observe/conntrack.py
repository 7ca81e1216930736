"""The connections the kernel tracks now (conntrack, over ctnetlink), for `plan`'s impact on
recent clients (verify/impact.py): who is connected, or was a moment ago, to which host address
and port, as the client dialled it (the original tuple, before Docker's DNAT).

One dump per family over a raw netfilter socket (fwsync/backends/netlink.py, which says why not
pyroute2), each entry decoded only as far as its original tuple and status. What conntrack
holds is recent flows only: an established TCP connection for as long as it lasts (days), a
closed one for about two minutes (TIME_WAIT), a UDP flow for 30-120 s. A connection fwsync's
rules dropped or rejected never got an entry (its first packet was not let through).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from fwsync.backends.netlink import (
    HEADER,
    NFGEN,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    attrs,
    dump,
)
from fwsync.core.matching import IPAddress

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET = 0, 1
CTA_TUPLE_ORIG, CTA_STATUS = 1, 3
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
IPS_DST_NAT = 1 << 5
_PROTOS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp"}
MAX_FLOWS = 1_000_000  # nf_conntrack_max's order: a table this big is not read past it


@dataclass(frozen=True, slots=True)
class Flow:
    """One tracked connection, as its client began it."""

    proto: str  # tcp | udp
    source: IPAddress
    sport: int
    dest: IPAddress  # the address the client dialled (before DNAT)
    dport: int
    dnat: bool  # its destination was rewritten (a published port's DNAT)


def request(family: int, seq: int = 1) -> bytes:
    body = NFGEN.pack(family, 0, 0)
    kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
    return HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def parse_flow(top: dict[int, bytes]) -> Flow | None:
    """A conntrack message's attributes → its Flow; None for what is not TCP or UDP."""
    orig = top.get(CTA_TUPLE_ORIG)
    if orig is None:
        return None
    tuple_ = attrs(orig, 0, len(orig))
    ip = attrs(tuple_.get(CTA_TUPLE_IP, b""), 0, len(tuple_.get(CTA_TUPLE_IP, b"")))
    proto = attrs(tuple_.get(CTA_TUPLE_PROTO, b""), 0, len(tuple_.get(CTA_TUPLE_PROTO, b"")))
    num = proto.get(CTA_PROTO_NUM)
    name = _PROTOS.get(num[0]) if num else None
    if name is None or CTA_PROTO_SRC_PORT not in proto or CTA_PROTO_DST_PORT not in proto:
        return None
    if CTA_IP_V4_SRC in ip and CTA_IP_V4_DST in ip:
        src: IPAddress = ipaddress.IPv4Address(ip[CTA_IP_V4_SRC][:4])
        dst: IPAddress = ipaddress.IPv4Address(ip[CTA_IP_V4_DST][:4])
    elif CTA_IP_V6_SRC in ip and CTA_IP_V6_DST in ip:
        src = ipaddress.IPv6Address(ip[CTA_IP_V6_SRC][:16])
        dst = ipaddress.IPv6Address(ip[CTA_IP_V6_DST][:16])
    else:
        return None
    status = struct.unpack(">I", top[CTA_STATUS][:4])[0] if len(
        top.get(CTA_STATUS, b"")) >= 4 else 0
    (sport,) = struct.unpack(">H", proto[CTA_PROTO_SRC_PORT][:2])
    (dport,) = struct.unpack(">H", proto[CTA_PROTO_DST_PORT][:2])
    return Flow(name, src, sport, dst, dport, bool(status & IPS_DST_NAT))


def tracked_flows() -> list[Flow]:
    """Every TCP and UDP connection conntrack holds in this network namespace, both families.
    OSError when ctnetlink cannot be asked (not root, no nf_conntrack_netlink)."""
    flows: list[Flow] = []

    def on_message(kind: int, top: dict[int, bytes]) -> None:
        if kind & 0xFF != IPCTNL_MSG_CT_NEW or len(flows) >= MAX_FLOWS:
            return
        flow = parse_flow(top)
        if flow is not None:
            flows.append(flow)

    for family in (socket.AF_INET, socket.AF_INET6):
        dump(request(family), on_message)
    return flows
