"""The names and flags of the kernel's `inet` nftables tables, asked over netlink directly.

libnftables 1.0.6 cannot be asked this cheaply or safely: `list tables` fetches every element of
every set first (~0.6 s with a 100k-element set), and listing a table that has the `owner` flag
(another program's, e.g. firewalld's) prints broken JSON or crashes the process ("corrupted
double-linked list"). One NFT_MSG_GETTABLE dump answers in well under a millisecond, touches no
set, and prints nothing: the nftables backend asks it before it lets libnftables list anything.
"""

from __future__ import annotations

import os
import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE = 0, 1
NFT_MSG_NEWCHAIN, NFT_MSG_GETCHAIN = 3, 4
NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6 = 1, 2, 10
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NFTA_TABLE_NAME, NFTA_TABLE_FLAGS = 1, 2
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, resource id
_ATTR = struct.Struct("=HH")  # nlattr: length, type


def request(seq: int = 1, message: int = NFT_MSG_GETTABLE, family: int = NFPROTO_INET) -> bytes:
    body = _NFGEN.pack(family, 0, 0)
    kind = (NFNL_SUBSYS_NFTABLES << 8) | message
    return _HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def parse_chains(data: bytes, chains: set[tuple[str, str]]) -> bool:
    """Add the (table, chain) names in one datagram of a chain dump to `chains`; True once it
    is done. Raises OSError for an error message."""
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
        elif kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN:
            names: dict[int, str] = {}
            at = pos + _HEADER.size + _NFGEN.size
            while at + _ATTR.size <= pos + length:
                size, attr = _ATTR.unpack_from(data, at)
                if size < _ATTR.size:
                    break
                if attr & 0x3FFF in (NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME):
                    value = data[at + _ATTR.size:at + size]
                    names[attr & 0x3FFF] = value.split(b"\0", 1)[0].decode(errors="replace")
                at += (size + 3) & ~3
            if NFTA_CHAIN_TABLE in names and NFTA_CHAIN_NAME in names:
                chains.add((names[NFTA_CHAIN_TABLE], names[NFTA_CHAIN_NAME]))
        pos += (length + 3) & ~3
    return False


def chain_names(family: int) -> set[tuple[str, str]] | None:
    """(table, chain) of every nftables chain of one family (NFPROTO_IPV4 holds iptables-nft's
    IPv4 tables, NFPROTO_IPV6 ip6tables-nft's): names only, no rule is listed. None when
    netlink cannot be asked here."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
            sock.settimeout(5)
            sock.bind((0, 0))
            sock.send(request(message=NFT_MSG_GETCHAIN, family=family))
            chains: set[tuple[str, str]] = set()
            while not parse_chains(sock.recv(1 << 16), chains):
                pass
            return chains
    except (OSError, struct.error):
        return None


def parse(data: bytes, tables: dict[str, int]) -> bool:
    """Add the tables in one datagram of the dump's answer to `tables`; True once it is done.
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
        elif kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE:
            name, flags = None, 0
            at = pos + _HEADER.size + _NFGEN.size
            while at + _ATTR.size <= pos + length:
                size, attr = _ATTR.unpack_from(data, at)
                if size < _ATTR.size:
                    break
                value = data[at + _ATTR.size:at + size]
                if attr & 0x3FFF == NFTA_TABLE_NAME:
                    name = value.split(b"\0", 1)[0].decode(errors="replace")
                elif attr & 0x3FFF == NFTA_TABLE_FLAGS and len(value) >= 4:
                    (flags,) = struct.unpack(">I", value[:4])
                at += (size + 3) & ~3
            if name is not None:
                tables[name] = flags
        pos += (length + 3) & ~3
    return False


def inet_table_flags() -> dict[str, int] | None:
    """`inet` table name → its flags (0: none; 2: owner), or None when netlink cannot be asked
    here (the caller then lists through libnftables as before)."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
            sock.settimeout(5)
            sock.bind((0, 0))
            sock.send(request())
            tables: dict[str, int] = {}
            while not parse(sock.recv(1 << 16), tables):
                pass
            return tables
    except (OSError, struct.error):
        return None
