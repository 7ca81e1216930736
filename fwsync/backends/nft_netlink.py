"""The names and flags of the kernel's `inet` nftables tables, asked over netlink directly.

libnftables 1.0.6 cannot be asked this cheaply or safely: `list tables` fetches every element of
every set first (~0.6 s with a 100k-element set), and listing a table that has the `owner` flag
(another program's, e.g. firewalld's) prints broken JSON or crashes the process ("corrupted
double-linked list"). One NFT_MSG_GETTABLE dump answers in well under a millisecond, touches no
set, and prints nothing: the nftables backend asks it before it lets libnftables list anything.
"""

from __future__ import annotations

import struct

from fwsync.backends.netlink import (
    HEADER,
    NFGEN,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    OnMessage,
    cstring,
    dump,
    walk,
)

__all__ = ["NLMSG_DONE", "NLMSG_ERROR", "chain_names", "inet_table_flags", "parse", "request"]

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE = 0, 1
NFT_MSG_NEWCHAIN, NFT_MSG_GETCHAIN = 3, 4
NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6 = 1, 2, 10
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 3
NFTA_TABLE_NAME, NFTA_TABLE_FLAGS = 1, 2


def request(seq: int = 1, message: int = NFT_MSG_GETTABLE, family: int = NFPROTO_INET) -> bytes:
    body = NFGEN.pack(family, 0, 0)
    kind = (NFNL_SUBSYS_NFTABLES << 8) | message
    return HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def chain_names(family: int) -> set[tuple[str, str]] | None:
    """(table, chain) of every nftables chain of one family (NFPROTO_IPV4 holds iptables-nft's
    IPv4 tables, NFPROTO_IPV6 ip6tables-nft's): names only, no rule is listed. None when
    netlink cannot be asked here."""
    chains: set[tuple[str, str]] = set()

    def take(kind: int, attrs: dict[int, bytes]) -> None:
        if (kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN
                and NFTA_CHAIN_TABLE in attrs and NFTA_CHAIN_NAME in attrs):
            chains.add((cstring(attrs[NFTA_CHAIN_TABLE]), cstring(attrs[NFTA_CHAIN_NAME])))

    try:
        dump(request(message=NFT_MSG_GETCHAIN, family=family), take)
    except (OSError, struct.error):
        return None
    return chains


def _into(tables: dict[str, int]) -> OnMessage:
    """A table dump's messages, as name → flags into `tables`."""
    def take(kind: int, attrs: dict[int, bytes]) -> None:
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE and NFTA_TABLE_NAME in attrs:
            flags = attrs.get(NFTA_TABLE_FLAGS, b"")
            tables[cstring(attrs[NFTA_TABLE_NAME])] = (
                struct.unpack(">I", flags[:4])[0] if len(flags) >= 4 else 0)

    return take


def parse(data: bytes, tables: dict[str, int]) -> bool:
    """Add the tables in one datagram of the table dump's answer to `tables`; True once it is
    done. Raises OSError for an error message (the kernel's errno)."""
    return walk(data, _into(tables))


def inet_table_flags() -> dict[str, int] | None:
    """`inet` table name → its flags (0: none; 2: owner), or None when netlink cannot be asked
    here (the caller then lists through libnftables as before)."""
    tables: dict[str, int] = {}
    try:
        dump(request(), _into(tables))
    except (OSError, struct.error):
        return None
    return tables
