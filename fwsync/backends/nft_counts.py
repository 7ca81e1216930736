"""How many elements an nftables set holds, asked over netlink, and how many it should hold.

A big set of fwsync's (LIST_BELOW elements or more) is known between full reads by the digest in
its name (Backend.read). ipset's headers count a set's elements, so a hand `ipset del` shows as
a count that is not the name's and the set is listed after all; nftables has no such count
(NFTA_SET_DESC_SIZE is the size declared, not the number held), so an `nft delete element`
went unseen by `plan` and `apply` until `--full`. Here the count is taken from one
NFT_MSG_GETSETELEM dump whose elements are counted, not decoded.

That dump is not cheap for every size: the kernel answers it in ~32 KB parts and walks the set
from its first element again for each part, so its cost grows with the square of the set.
Measured here (kernel 6.18, a loaded 2-core machine, 3 runs): a hash set of 1k addresses
0.3-0.6 ms, 10k 4.5-13 ms, 30k 30-75 ms, 50k 170-210 ms, 100k 0.48-0.56 s; an interval set
of 10k prefixes (20k kernel elements) 19-30 ms, of 30k 0.27-0.40 s. So only sets of fewer
than COUNT_BELOW elements are counted; a bigger one is known by its name between full reads,
as before (the daemon hears every element edit over netlink, daemon/nft_watch.py, and reads
in full then).

What the kernel holds for a set differs from what fwsync wrote for an interval set: nft 1.0.6
writes each interval as a start element and an end element (none for an interval that reaches
the top of the key space), plus one end element at key zero when no interval starts there
(measured on this kernel: {10.0.0.0/24} is 3 elements, {10.0.0.0/24, 10.0.1.0/24} 5,
{255.0.0.0/8} 2). A count that differs from this for any reason — a hand edit, or an nft that
encodes intervals otherwise — only makes the set be listed and compared element by element:
a wrong guess costs time, never a missed edit or a repair loop.
"""

from __future__ import annotations

import socket
import struct

from fwsync.backends.netlink import (
    ATTR,
    HEADER,
    NFGEN,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    attr,
    dump,
)

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM = 12, 13
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFPROTO_INET = 1
COUNT_BELOW = 10_000  # elements fwsync writes; above this a count costs ~10 ms or more
KEY_BITS = {"ipv4_addr": 32, "ipv6_addr": 128, "inet_service": 16}


def request(table: str, name: str, family: int = NFPROTO_INET, seq: int = 1) -> bytes:
    body = NFGEN.pack(family, 0, 0) + attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0") \
        + attr(NFTA_SET_ELEM_LIST_SET, name.encode() + b"\0")
    kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM
    return HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def count_nested(data: bytes) -> int:
    """The number of attributes in a nested attribute's payload (each is one set element):
    their lengths are followed, their contents never read."""
    n, pos, end = 0, 0, len(data)
    unpack = ATTR.unpack_from
    while pos + ATTR.size <= end:
        size = unpack(data, pos)[0]
        if size < ATTR.size:
            break
        n += 1
        pos += (size + 3) & ~3
    return n


def element_count(table: str, name: str, family: int = NFPROTO_INET) -> int | None:
    """How many elements the kernel holds in one set, or None when netlink cannot be asked
    (or has no such set)."""
    total = 0

    def take(kind: int, found: dict[int, bytes]) -> None:
        nonlocal total
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM:
            total += count_nested(found.get(NFTA_SET_ELEM_LIST_ELEMENTS, b""))

    try:
        dump(request(table, name, family), take)
    except (OSError, struct.error):
        return None
    return total


def _bounds(text: str, bits: int) -> tuple[int, int] | None:
    """An element's first and last key as integers: an address, a prefix, a port or a port
    range as objects_state prints them; None for anything else."""
    if bits == 16:
        first, _, last = text.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        return int(first), int(last or first)
    addr, _, plen = text.partition("/")
    try:
        packed = socket.inet_pton(socket.AF_INET6 if bits == 128 else socket.AF_INET, addr)
    except OSError:
        return None
    lo = int.from_bytes(packed, "big")
    host_bits = bits - int(plen) if plen.isdigit() else 0
    return lo, lo | ((1 << host_bits) - 1)


def kernel_elements(elements: tuple[str, ...], key_type: str, interval: bool) -> int | None:
    """How many elements the kernel holds for a set fwsync wrote with these elements (see the
    module's docstring), or None when that cannot be said (an element of an unknown form)."""
    if not interval:
        return len(elements)
    bits = KEY_BITS.get(key_type)
    if bits is None:
        return None
    top = (1 << bits) - 1
    ends = 0
    lowest = top + 1
    for text in elements:
        bounds = _bounds(text, bits)
        if bounds is None:
            return None
        lo, hi = bounds
        lowest = min(lowest, lo)
        ends += hi != top
    if not elements:
        return 0
    return len(elements) + ends + (lowest != 0)
