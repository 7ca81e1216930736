"""The packets fwsync's log rules hand to an NFLOG group (nftables `log group N prefix "..."`,
iptables `-j NFLOG --nflog-group N --nflog-prefix "..."`), read over nfnetlink_log: each one a
`Logged` record — which rule (its prefix), who, to where as logged (after Docker's DNAT on the
forward path), and, when the kernel attaches the connection's conntrack entry, to where the
client dialled (the original tuple, before DNAT).

A raw netfilter socket, as fwsync/backends/netlink.py speaks it (which says why not pyroute2).
Constants from include/uapi/linux/netfilter/nfnetlink_log.h. What a kernel needs:

- No NFULNL_CFG_CMD_PF_BIND/PF_UNBIND (legacy: they choose the family's default logger, which
  `log group` and `-j NFLOG` do not use): binding the group is enough (seen on 6.18, with
  /proc/net/netfilter/nf_log listing NONE for both families; tests/kernel/test_nflog.py).
- The conntrack entry (NFULA_CT, flag NFULNL_CFG_F_CONNTRACK = 0x4) needs the kernel's ctnetlink
  glue (CONFIG_NETFILTER_NETLINK_GLUE_CT and nf_conntrack_netlink loaded). Without it the kernel
  refuses the flag (EOPNOTSUPP); the reader then goes on without (`reader.conntrack` False) and
  every record's `orig_dest` is None.
- A group is one socket's: another socket's bind is refused with EPERM (the same errno as
  "not CAP_NET_ADMIN"; /proc/net/netfilter/nfnetlink_log tells the two apart).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from fwsync.backends.netlink import (
    HEADER,
    NETLINK_NETFILTER,
    NFGEN,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    attr,
    attrs,
    cstring,
)
from fwsync.core.matching import IPAddress
from fwsync.observe.conntrack import parse_flow

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
# enum nfulnl_attr_type
NFULA_PACKET_HDR, NFULA_MARK, NFULA_TIMESTAMP = 1, 2, 3
NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV = 4, 5
NFULA_IFINDEX_PHYSINDEV, NFULA_IFINDEX_PHYSOUTDEV, NFULA_HWADDR = 6, 7, 8
NFULA_PAYLOAD, NFULA_PREFIX, NFULA_UID, NFULA_SEQ, NFULA_SEQ_GLOBAL = 9, 10, 11, 12, 13
NFULA_GID, NFULA_HWTYPE, NFULA_HWHEADER, NFULA_HWLEN = 14, 15, 16, 17
NFULA_CT, NFULA_CT_INFO, NFULA_VLAN, NFULA_L2HDR = 18, 19, 20, 21
# enum nfulnl_attr_config, enum nfulnl_msg_config_cmds
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_NLBUFSIZ = 1, 2, 3
NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH, NFULA_CFG_FLAGS = 4, 5, 6
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 1, 2
NFULNL_COPY_PACKET = 0x02
NFULNL_CFG_F_SEQ, NFULNL_CFG_F_SEQ_GLOBAL, NFULNL_CFG_F_CONNTRACK = 0x1, 0x2, 0x4

PACKET = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
CONFIG = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
COPY_RANGE = 128  # an IPv6 header, a few extension headers and the TCP/UDP ports
FLUSH_TIMEOUT = 1  # 1/100 s: the kernel's wait before sending a part-filled batch
RCVBUF = 1 << 20  # room for bursts: what does not fit is lost (counted, see NflogReader)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Python 3.12+ names it
RECV_SIZE = 1 << 17  # one datagram: a batch is at most nlbufsiz (default ~ a page)
INSTANCES = Path("/proc/net/netfilter/nfnetlink_log")

_PROTOS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", socket.IPPROTO_ICMP: "icmp",
           socket.IPPROTO_ICMPV6: "icmpv6"}
_PORTS = {socket.IPPROTO_TCP, socket.IPPROTO_UDP}
# IPv6 extension headers walked past: hop-by-hop, routing, destination options (8-byte
# units), fragment (8 bytes), AH (4-byte units). Anything else is the protocol.
_EXT_8, _FRAGMENT, _AH = {0, 43, 60}, 44, 51


@dataclass(frozen=True, slots=True)
class Logged:
    """One packet a log rule sent to the group."""

    prefix: str  # the rule's log prefix
    family: int  # 4 | 6
    proto: str  # tcp | udp | icmp | icmpv6 | the protocol number
    source: IPAddress
    sport: int | None  # None: not TCP/UDP, or not in the copied bytes (a later fragment)
    dest: IPAddress  # as logged: after DNAT on the forward path
    dport: int | None
    orig_dest: IPAddress | None  # what the client dialled (conntrack's original tuple)
    orig_dport: int | None
    indev: str | None  # None: no input interface, or its index no longer names one
    outdev: str | None
    time: float  # Unix time: the kernel's receive stamp if it gave one, else when read


def _u32(value: bytes | None) -> int | None:
    return struct.unpack(">I", value[:4])[0] if value is not None and len(value) >= 4 else None


def _ifname(index: int) -> str | None:
    try:
        return socket.if_indextoname(index)
    except (OSError, OverflowError):
        return None


def _ports(data: bytes, at: int, proto: int) -> tuple[int | None, int | None]:
    if proto not in _PORTS or len(data) < at + 4:
        return None, None
    sport, dport = struct.unpack_from(">HH", data, at)
    return sport, dport


def _ipv4(data: bytes) -> tuple[int, IPAddress, IPAddress, int | None, int | None] | None:
    if len(data) < 20:
        return None
    header = (data[0] & 0x0F) * 4
    proto = data[9]
    fragment = struct.unpack_from(">H", data, 6)[0] & 0x1FFF
    src, dst = ipaddress.IPv4Address(data[12:16]), ipaddress.IPv4Address(data[16:20])
    if header < 20 or fragment:  # a later fragment carries no L4 header
        return proto, src, dst, None, None
    return proto, src, dst, *_ports(data, header, proto)


def _ipv6(data: bytes) -> tuple[int, IPAddress, IPAddress, int | None, int | None] | None:
    if len(data) < 40:
        return None
    src, dst = ipaddress.IPv6Address(data[8:24]), ipaddress.IPv6Address(data[24:40])
    proto, at = data[6], 40
    while proto in _EXT_8 or proto in (_FRAGMENT, _AH):
        if len(data) < at + 8:
            return proto, src, dst, None, None
        nxt, size = data[at], data[at + 1]
        if proto == _FRAGMENT:
            if struct.unpack_from(">H", data, at + 2)[0] & 0xFFF8:  # not the first fragment
                return nxt, src, dst, None, None
            at += 8
        else:
            at += (size + 2) * 4 if proto == _AH else (size + 1) * 8
        proto = nxt
    return proto, src, dst, *_ports(data, at, proto)


def parse_packet(attributes: dict[int, bytes], *,
                 ifname: Callable[[int], str | None] = _ifname,
                 now: Callable[[], float] = time.time) -> Logged | None:
    """An NFULNL_MSG_PACKET's attributes → its Logged; None when the payload holds no whole
    IPv4 or IPv6 header (not copied, not IP, cut short). `ifname` names an interface index
    (this namespace's, by default), `now` stamps a packet the kernel did not."""
    payload = attributes.get(NFULA_PAYLOAD, b"")
    version = payload[0] >> 4 if payload else 0
    header = _ipv4(payload) if version == 4 else _ipv6(payload) if version == 6 else None
    if header is None:
        return None
    proto, source, dest, sport, dport = header
    orig_dest: IPAddress | None = None
    orig_dport: int | None = None
    ct = attributes.get(NFULA_CT)
    if ct is not None:
        try:
            flow = parse_flow(attrs(ct, 0, len(ct)))
        except (ValueError, struct.error):  # a tuple cut short: as if the kernel sent none
            flow = None
        if flow is not None:
            orig_dest, orig_dport = flow.dest, flow.dport
    devices = []
    for kind in (NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV):
        index = _u32(attributes.get(kind))
        devices.append(ifname(index) if index else None)
    stamp = attributes.get(NFULA_TIMESTAMP, b"")
    if len(stamp) >= 16:
        sec, usec = struct.unpack_from(">QQ", stamp)
        when = sec + usec / 1e6
    else:
        when = now()
    return Logged(cstring(attributes.get(NFULA_PREFIX, b"")), version,
                  _PROTOS.get(proto, str(proto)), source, sport, dest, dport, orig_dest,
                  orig_dport, devices[0], devices[1], when)


def config(group: int, seq: int, *attributes: bytes) -> bytes:
    """One NFULNL_MSG_CONFIG request for `group` (nfgenmsg's res_id is big-endian), acked."""
    body = NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(group)) + b"".join(attributes)
    return HEADER.pack(HEADER.size + len(body), CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence, body after the nlmsghdr) of each message in one datagram."""
    pos = 0
    while pos + HEADER.size <= len(data):
        length, kind, _flags, seq, _port = HEADER.unpack_from(data, pos)
        if length < HEADER.size or pos + length > len(data):
            return
        yield kind, seq, data[pos + HEADER.size:pos + length]
        pos += (length + 3) & ~3


def _holder(group: int) -> int | None:
    """The netlink port id that holds `group` in this namespace, if any."""
    try:
        lines = INSTANCES.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == str(group):
            return int(fields[1])
    return None


class NflogReader:
    """The packets of one NFLOG group in this network namespace (root, or CAP_NET_ADMIN).

    `read()` returns what has arrived; `fileno()` is for a loop's add_reader. Packets the socket
    had no room for are gone: `overruns` counts the kernel's ENOBUFS reports, `lost` the packets
    missing from the group's sequence numbers (NFULA_SEQ)."""

    def __init__(self, group: int, *, copy_range: int = COPY_RANGE) -> None:
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"NFLOG group {group} is not in 0-65535")
        self.group = group
        self.copy_range = copy_range
        self.conntrack = False  # the kernel attaches each packet's conntrack entry
        self.overruns = 0
        self.lost = 0
        self._sock: socket.socket | None = None
        self._seq = 0
        self._next: int | None = None  # the NFULA_SEQ expected next
        self._pending: list[Logged] = []  # packets that came while open() waited for acks

    def fileno(self) -> int:
        if self._sock is None:
            raise ValueError("NflogReader is not open")
        return self._sock.fileno()

    def open(self) -> Self:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock = sock
        try:
            sock.bind((0, 0))
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self._bind()
        except BaseException:
            self.close()
            raise
        return self

    def _bind(self) -> None:
        be32 = struct.Struct(">I").pack
        try:
            self._ask(attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])),
                      attr(NFULA_CFG_MODE, struct.pack(">IBB", self.copy_range,
                                                       NFULNL_COPY_PACKET, 0)),
                      attr(NFULA_CFG_QTHRESH, be32(1)),
                      attr(NFULA_CFG_TIMEOUT, be32(FLUSH_TIMEOUT)))
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise OSError(exc.errno, f"nflog: binding group {self.group}: "
                                         f"{os.strerror(exc.errno or 0)}") from None
            holder = _holder(self.group)
            why = (f"already bound by another socket (netlink port id {holder})"
                   if holder is not None else "not permitted (needs root or CAP_NET_ADMIN)")
            raise OSError(errno.EPERM, f"nflog: binding group {self.group}: {why}") from None
        # Its own request: the kernel checks the flags before anything else in a message, and
        # refuses NFULNL_CFG_F_CONNTRACK without the ctnetlink glue (EAGAIN: it has just loaded
        # nf_conntrack_netlink, ask again).
        for flags, attempts in ((NFULNL_CFG_F_SEQ | NFULNL_CFG_F_CONNTRACK, 2),
                                (NFULNL_CFG_F_SEQ, 1)):
            for _ in range(attempts):
                try:
                    self._ask(attr(NFULA_CFG_FLAGS, struct.pack(">H", flags)))
                except OSError as exc:
                    if exc.errno == errno.EAGAIN:
                        continue
                    if exc.errno in (errno.EOPNOTSUPP, errno.ENOENT) and flags & \
                            NFULNL_CFG_F_CONNTRACK:
                        break
                    raise OSError(exc.errno, f"nflog: setting group {self.group}'s flags: "
                                             f"{os.strerror(exc.errno or 0)}") from None
                self.conntrack = bool(flags & NFULNL_CFG_F_CONNTRACK)
                return

    def _ask(self, *attributes: bytes) -> None:
        """Send one config request and wait for its ack (OSError with the kernel's errno)."""
        assert self._sock is not None
        self._seq += 1
        self._sock.settimeout(5)
        try:
            self._sock.send(config(self.group, self._seq, *attributes))
            while True:
                try:
                    data = self._sock.recv(RECV_SIZE)
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    self.overruns += 1
                    continue
                for kind, seq, body in messages(data):
                    if kind == NLMSG_ERROR and seq == self._seq:
                        (error,) = struct.unpack_from("=i", body)
                        if error:
                            raise OSError(-error, os.strerror(-error))
                        return
                    if kind == PACKET:
                        self._take(body, self._pending)
        finally:
            self._sock.settimeout(None)

    def _take(self, body: bytes, out: list[Logged]) -> None:
        top = attrs(body, NFGEN.size, len(body))
        seq = _u32(top.get(NFULA_SEQ))
        if seq is not None:
            if self._next is not None and seq != self._next:
                self.lost += (seq - self._next) & 0xFFFFFFFF
            self._next = (seq + 1) & 0xFFFFFFFF
        logged = parse_packet(top)
        if logged is not None:
            out.append(logged)

    def read(self, timeout: float | None = None) -> list[Logged]:
        """The packets that have arrived, waiting up to `timeout` seconds (None: for ever) for
        the first; [] when none came."""
        if self._sock is None:
            raise ValueError("NflogReader is not open")
        out, self._pending = self._pending, []
        if not out:
            ready, _, _ = select.select([self._sock], [], [], timeout)
            if not ready:
                return out
        while True:
            try:
                data = self._sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1  # the socket overran; what it holds after is still good
                continue
            for kind, _seq, body in messages(data):
                if kind == PACKET:
                    self._take(body, out)
                elif kind == NLMSG_ERROR and len(body) >= 4:
                    (error,) = struct.unpack_from("=i", body)
                    if error:
                        raise OSError(-error, f"nflog: group {self.group}: "
                                              f"{os.strerror(-error)}")
                elif kind == NLMSG_DONE:
                    break

    def close(self) -> None:
        """Closing the socket unbinds the group (the kernel drops a closed port's instances)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        return self.open() if self._sock is None else self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

