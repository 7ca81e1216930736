"""Address-list entries: text → canonical CIDR text and integers, fast. Pure.

`ipaddress.ip_network` costs ~15 µs an entry (it tries IPv4, then parses IPv6 in Python), so a
100k-entry list took over a second to read. The C parser behind `socket.inet_pton` takes the
usual entries (a plain IPv4 or IPv6 address, with or without a prefix length) in well under a
microsecond; whatever it does not take plainly — an embedded IPv4 in IPv6, a zone, host bits
set, a malformed prefix — goes to `ipaddress`, which decides and words the error as before. The
result is the same as `ipaddress` gives (a unit test holds the two equal on generated input).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from fwsync.rules.model import Network, Span

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_BITS = {4: 32, 6: 128}


def fast_entry(text: str) -> tuple[str, Span] | None:
    """(canonical CIDR text, span) for a plain address or CIDR; None: ask `ipaddress`."""
    addr, slash, plen_text = text.partition("/")
    version = 6 if ":" in addr else 4
    if version == 6 and "." in addr:
        return None  # ::ffff:192.0.2.1 and friends: ipaddress prints them its own way
    try:
        packed = socket.inet_pton(_AF[version], addr)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None
    bits = _BITS[version]
    if slash:
        # Plain decimal only (ipaddress refuses "+8", "٨" and leading zeros its own way).
        if not (plen_text.isascii() and plen_text.isdigit()) or len(plen_text) > 3 or (
                len(plen_text) > 1 and plen_text[0] == "0"):
            return None
        plen = int(plen_text)
        if plen > bits:
            return None
    else:
        plen = bits
    low = int.from_bytes(packed, "big")
    if low & ((1 << (bits - plen)) - 1):
        return None  # host bits set: ipaddress says so, and suggests the network
    canonical = socket.inet_ntop(_AF[version], packed)
    if version == 4:
        if canonical != addr:
            return None  # leading zeros and the like: ipaddress's rules decide
    elif low >> 32 in (0, 0xFFFF):
        return None  # ::a.b.c.d / ::ffff:a.b.c.d: inet_ntop writes the IPv4 part dotted
    return f"{canonical}/{plen}", (version, low, plen)


def entry_of(network: Network) -> tuple[str, Span]:
    return str(network), (network.version, int(network.network_address), network.prefixlen)


def span_bounds(span: Span) -> tuple[int, int]:
    """(first, last) address of an entry, as integers."""
    version, low, plen = span
    return low, low | ((1 << (_BITS[version] - plen)) - 1)


def disjoint_entries(entries: Iterable[str], spans: Iterable[Span], family: int
                     ) -> tuple[str, ...]:
    """The entries of one family, sorted, merged so that no two overlap (an interval set in the
    kernel refuses overlaps). Canonical CIDR text, as `str(ipaddress.ip_network)` gives it."""
    pairs = sorted(((s[1], s[2]), e) for e, s in zip(entries, spans, strict=True)
                   if s[0] == family)
    bits = _BITS[family]
    last = -1
    disjoint = True
    for (low, plen), _entry in pairs:
        if low <= last:
            disjoint = False
            break
        last = low | ((1 << (bits - plen)) - 1)
    if disjoint:
        # The usual case for a big list: collapsing (slow for 10k networks) would only merge
        # neighbours, and the kernel takes those as they are.
        return tuple(e for _key, e in pairs)
    nets = [ipaddress.ip_network(e) for _key, e in pairs]
    return tuple(str(n) for n in ipaddress.collapse_addresses(nets))  # type: ignore[type-var]
