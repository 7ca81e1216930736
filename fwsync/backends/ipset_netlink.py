"""The kernel's ipsets — name, type, family, element count — asked over netlink directly.

What `ipset list -terse` prints, without starting a process: every read of the iptables backend
needs it (which of fwsync's sets exist, and whether each holds as many elements as its name
says), and on the daemon's path from a Docker event to the kernel a process start is a good
part of the time on a busy machine. One IPSET_CMD_LIST dump with the "header only" flag answers
in well under a millisecond and lists no element. When netlink cannot be asked (no ip_set
module, an old kernel, a refusal), the caller runs `ipset list -terse` as before.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

NETLINK_NETFILTER = 12
NFNL_SUBSYS_IPSET = 6
IPSET_CMD_LIST = 7
IPSET_PROTOCOL = 7  # ipset 7.x and kernels since 4.x; 6 is the oldest a kernel takes
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
# Attributes (include/uapi/linux/netfilter/ipset/ip_set.h)
ATTR_PROTOCOL, ATTR_SETNAME, ATTR_TYPENAME, ATTR_REVISION, ATTR_FAMILY = 1, 2, 3, 4, 5
ATTR_FLAGS, ATTR_DATA = 6, 7
ATTR_ELEMENTS = 24  # in DATA: the number of elements (IPSET_ATTR_ELEMENTS)
FLAG_LIST_HEADER = 1 << 2  # IPSET_FLAG_LIST_HEADER: the headers, no member
NFPROTO_IPV4, NFPROTO_IPV6 = 2, 10
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, resource id
_ATTR = struct.Struct("=HH")  # nlattr: length, type


@dataclass(frozen=True)
class IpsetHeader:
    type: str  # "hash:net", ...
    family: str  # "inet", "inet6", or "" for a type without one
    elements: int | None  # None: the kernel did not say


def _attr(kind: int, value: bytes) -> bytes:
    data = _ATTR.pack(_ATTR.size + len(value), kind) + value
    return data + b"\0" * (-len(data) % 4)


def request(seq: int = 1) -> bytes:
    body = _NFGEN.pack(socket.AF_INET, 0, 0) + _attr(ATTR_PROTOCOL, bytes([IPSET_PROTOCOL])) \
        + _attr(ATTR_FLAGS | NLA_F_NET_BYTEORDER, struct.pack(">I", FLAG_LIST_HEADER))
    kind = (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_LIST
    return _HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP,
                        seq, 0) + body


def _attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while start + _ATTR.size <= end:
        size, kind = _ATTR.unpack_from(data, start)
        if size < _ATTR.size:
            break
        out[kind & 0x3FFF] = data[start + _ATTR.size:start + size]
        start += (size + 3) & ~3
    return out


def parse(data: bytes, sets: dict[str, IpsetHeader]) -> bool:
    """Add the sets in one datagram of the dump's answer to `sets`; True once it is done.
    Raises OSError for an error message (the kernel's errno)."""
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, kind, _flags, _seq, _port = _HEADER.unpack_from(data, pos)
        if length < _HEADER.size:
            raise OSError("netlink: malformed answer")
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, pos + _HEADER.size)
            if error:
                raise OSError(-error, os.strerror(-error))
            return True  # the acknowledgement that ends a dump some kernels send
        elif kind == (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_LIST:
            attrs = _attrs(data, pos + _HEADER.size + _NFGEN.size, pos + length)
            name = attrs.get(ATTR_SETNAME, b"").split(b"\0", 1)[0].decode(errors="replace")
            if name:
                family = attrs.get(ATTR_FAMILY, b"\0")[0]
                inner = attrs.get(ATTR_DATA, b"")
                count = _attrs(inner, 0, len(inner)).get(ATTR_ELEMENTS)
                sets[name] = IpsetHeader(
                    type=attrs.get(ATTR_TYPENAME, b"").split(b"\0", 1)[0].decode(
                        errors="replace"),
                    family={NFPROTO_IPV4: "inet", NFPROTO_IPV6: "inet6"}.get(family, ""),
                    elements=struct.unpack(">I", count[:4])[0] if count and len(count) >= 4
                    else None)
        pos += (length + 3) & ~3
    return False


def ipset_headers() -> dict[str, IpsetHeader] | None:
    """Every ipset in this network namespace, or None when netlink cannot be asked here (the
    caller then runs `ipset list -terse`). No ip_set module loaded means no ipset at all."""
    if not Path("/sys/module/ip_set").exists():
        return {}
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
            sock.settimeout(5)
            sock.bind((0, 0))
            sock.send(request())
            sets: dict[str, IpsetHeader] = {}
            while not parse(sock.recv(1 << 16), sets):
                pass
            return sets
    except (OSError, struct.error, IndexError):
        return None
