"""What the host shows of its interfaces: kind, bridge master, addresses and routes, read from
rtnetlink in this network namespace (three dump requests, well under a millisecond).

The core decides with it whether a Docker network's bridge is one Docker made (core/bridges.py):
an interface's name is chosen by whoever may run `docker network create`, what it carries is
not. Spoken directly, not through pyroute2, for the reason fwsync/backends/netlink.py gives
(its import costs each one-shot command ~0.1 s); not /sys/class/net, which `nsenter --net`
leaves showing the namespace that mounted /sys.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import replace

from fwsync.backends.netlink import (
    HEADER,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    attrs,
)
from fwsync.core.observed import DockerState, LinkFacts

NETLINK_ROUTE = 0
RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE = 18, 22, 26
IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst len, src len, tos, table, proto, scope, type
IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_INFO_KIND = 3, 10, 18, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15
RTN_UNICAST = 1
RT_TABLE_LOCAL = 255  # the host's own addresses, broadcast and multicast: not where it routes

OnMessage = Callable[[bytes, dict[int, bytes]], None]  # the fixed header, its attributes


def _dump(kind: int, fixed: bytes, size: int, on_message: OnMessage) -> None:
    request = HEADER.pack(HEADER.size + len(fixed), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + fixed
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.settimeout(5)
        sock.bind((0, 0))
        sock.send(request)
        while True:
            data, pos = sock.recv(1 << 16), 0
            while pos + HEADER.size <= len(data):
                length, mtype, _flags, _seq, _port = HEADER.unpack_from(data, pos)
                if length < HEADER.size:
                    raise OSError("rtnetlink: malformed answer")
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", data, pos + HEADER.size)
                    raise OSError(-error, "rtnetlink dump refused")
                body = pos + HEADER.size
                on_message(data[body:body + size], attrs(data, body + size, pos + length))
                pos += (length + 3) & ~3


def _address(family: int, raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if family == socket.AF_INET6 else socket.AF_INET, raw)


def read_links() -> tuple[LinkFacts, ...]:
    """Every interface of this namespace with what it carries. OSError when rtnetlink cannot
    be asked."""
    names: dict[int, str] = {}
    kinds: dict[int, str] = {}
    masters: dict[int, int] = {}

    def link(fixed: bytes, found: dict[int, bytes]) -> None:
        _family, _type, index, _flags, _change = IFINFO.unpack(fixed)
        names[index] = found.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace")
        info = found.get(IFLA_LINKINFO)
        kind = attrs(info, 0, len(info)).get(IFLA_INFO_KIND, b"") if info else b""
        kinds[index] = kind.split(b"\0", 1)[0].decode(errors="replace")
        if IFLA_MASTER in found:
            (masters[index],) = struct.unpack("=I", found[IFLA_MASTER][:4])

    addresses: dict[int, list[str]] = {}

    def address(fixed: bytes, found: dict[int, bytes]) -> None:
        family, plen, _flags, _scope, index = IFADDR.unpack(fixed)
        raw = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)
        if raw is not None and family in (socket.AF_INET, socket.AF_INET6):
            addresses.setdefault(index, []).append(f"{_address(family, raw)}/{plen}")

    routes: dict[int, list[str]] = {}

    def route(fixed: bytes, found: dict[int, bytes]) -> None:
        family, dst_len, _src, _tos, table, _proto, _scope, rtype, _flags = RTMSG.unpack(fixed)
        if RTA_TABLE in found:
            (table,) = struct.unpack("=I", found[RTA_TABLE][:4])
        if rtype != RTN_UNICAST or table == RT_TABLE_LOCAL or RTA_OIF not in found:
            return  # a multipath route names no single interface: it names none of Docker's
        if family not in (socket.AF_INET, socket.AF_INET6):
            return
        (oif,) = struct.unpack("=I", found[RTA_OIF][:4])
        dst = _address(family, found[RTA_DST]) if RTA_DST in found else (
            "::" if family == socket.AF_INET6 else "0.0.0.0")
        routes.setdefault(oif, []).append(str(ipaddress.ip_network(f"{dst}/{dst_len}",
                                                                   strict=False)))

    _dump(RTM_GETLINK, IFINFO.pack(0, 0, 0, 0, 0), IFINFO.size, link)
    _dump(RTM_GETADDR, IFADDR.pack(0, 0, 0, 0, 0), IFADDR.size, address)
    _dump(RTM_GETROUTE, RTMSG.pack(0, 0, 0, 0, 0, 0, 0, 0, 0), RTMSG.size, route)
    return tuple(sorted(
        LinkFacts(name=name, kind=kinds.get(index, ""),
                  master=names.get(masters.get(index, 0), ""),
                  addresses=tuple(sorted(addresses.get(index, ()))),
                  routes=tuple(sorted(set(routes.get(index, ())))))
        for index, name in names.items()))


def with_links(state: DockerState) -> DockerState:
    """`state` with the host's interfaces as they are now (None when they cannot be read: then
    no bridge is trusted, core/bridges.py)."""
    try:
        return replace(state, links=read_links())
    except (OSError, struct.error, ValueError):
        return replace(state, links=None)
