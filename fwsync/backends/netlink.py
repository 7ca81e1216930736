"""Netfilter's netlink spoken directly, for the few dumps fwsync asks on every read: nftables'
tables and chains (nft_netlink) and the ipsets' headers (ipset_netlink). Each is one dump
request answered in well under a millisecond, with nothing listed that fwsync does not need.

Not through pyroute2: importing `pyroute2.nftables.main` takes ~0.10 s and `pyroute2.ipset`
~0.13 s (`python -X importtime`, pyroute2 0.9.7, on the benchmark machine), half of what a
whole 10k-entry `fwsync apply` may take (≤ 0.25 s, docs/benchmarks.md), for two requests and
the headers of their answers.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, resource id
ATTR = struct.Struct("=HH")  # nlattr: length, type

# A message of the answer: its type and its attributes (after the nfgenmsg), by type.
OnMessage = Callable[[int, dict[int, bytes]], None]


def attr(kind: int, value: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    data = ATTR.pack(ATTR.size + len(value), kind) + value
    return data + b"\0" * (-len(data) % 4)


def attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    """The attributes in data[start:end] by type (the nested and byte-order flags cleared)."""
    out: dict[int, bytes] = {}
    while start + ATTR.size <= end:
        size, kind = ATTR.unpack_from(data, start)
        if size < ATTR.size:
            break
        out[kind & 0x3FFF] = data[start + ATTR.size:start + size]
        start += (size + 3) & ~3
    return out


def cstring(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def walk(data: bytes, on_message: OnMessage, *, ack_ends: bool = False) -> bool:
    """Hand each message in one datagram of a dump's answer to `on_message`; True once the dump
    is done (NLMSG_DONE, or with `ack_ends` the acknowledgement some kernels end an ipset dump
    with). Raises OSError for an error message (the kernel's errno)."""
    pos = 0
    while pos + HEADER.size <= len(data):
        length, kind, _flags, _seq, _port = HEADER.unpack_from(data, pos)
        if length < HEADER.size:
            raise OSError("netlink: malformed answer")
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, pos + HEADER.size)
            if error:
                raise OSError(-error, os.strerror(-error))
            if ack_ends:
                return True
        else:
            on_message(kind, attrs(data, pos + HEADER.size + NFGEN.size, pos + length))
        pos += (length + 3) & ~3
    return False


# One socket per thread, kept: closing a netfilter netlink socket waits for nf_tables to finish
# destroying what the last transaction removed (an RCU grace period: ~5 ms each in the daemon's
# drift repairs, cProfile of make_plan right after a foreign `nft flush chain`), and every read
# asks one or two dumps.
_local = threading.local()


def _socket() -> socket.socket:
    sock: socket.socket | None = getattr(_local, "sock", None)
    if sock is None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            sock.settimeout(5)
            sock.bind((0, 0))
        except OSError:
            sock.close()
            raise
        _local.sock = sock
    return sock


def dump(request: bytes, on_message: OnMessage, *, ack_ends: bool = False) -> None:
    """Send one dump request in this network namespace and walk its whole answer. OSError (or
    struct.error for a short message) when netlink cannot be asked or answers with an error.
    A dump cut short leaves its socket closed: what it did not read is not the next one's."""
    sock = _socket()
    try:
        sock.send(request)
        while not walk(sock.recv(1 << 16), on_message, ack_ends=ack_ends):
            pass
    except BaseException:
        _local.sock = None
        sock.close()
        raise
