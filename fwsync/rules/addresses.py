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
from functools import partial
from itertools import repeat

from fwsync.rules.model import Network, Span

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_BITS = {4: 32, 6: 128}
_from_big = partial(int.from_bytes, byteorder="big")


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


def bulk_entries(text: str) -> tuple[list[str], list[Span]] | None:
    """Every entry of an address list at once (what fast_entry gives for each line), when each
    line is blank, a comment, or one plain entry with an optional comment after it; None when any
    line is not, and the caller goes line by line, which locates each problem.

    fast_entry's checks, made on whole columns by C functions (`map` over inet_pton and
    inet_ntop) instead of a Python call per line: ~1 µs an entry instead of ~2.5."""
    if not text.isascii():
        return None  # a BOM, non-ASCII whitespace or letters: the line path decides
    lines = text.split("\n")
    if "#" in text:
        lines = [line.partition("#")[0] for line in lines]
    tokens = [t for t in map(str.strip, lines) if t]
    if len(" ".join(tokens).split()) != len(tokens):
        return None  # two words on a line (or a stray \r): the line path says where
    six = [":" in t for t in tokens]
    if all(six) or not any(six):
        return _bulk_family(tokens, 6 if six[:1] == [True] else 4)
    entries: list[str] = [""] * len(tokens)
    spans: list[Span] = [(0, 0, 0)] * len(tokens)
    for version in (4, 6):
        index = [i for i, is6 in enumerate(six) if is6 == (version == 6)]
        got = _bulk_family([tokens[i] for i in index], version)
        if got is None:
            return None
        for i, entry, span in zip(index, *got, strict=True):
            entries[i], spans[i] = entry, span
    return entries, spans


def _bulk_family(tokens: list[str], version: int) -> tuple[list[str], list[Span]] | None:
    """bulk_entries for tokens of one family (by the presence of ':'), in order."""
    parts = [t.partition("/") for t in tokens]
    addrs = [p[0] for p in parts]
    if version == 6 and "." in "".join(addrs):
        return None  # ::ffff:192.0.2.1 and friends: ipaddress prints them its own way
    family = _AF[version]
    try:
        packed = list(map(partial(socket.inet_pton, family), addrs))
    except (OSError, ValueError):
        return None
    canonical = list(map(partial(socket.inet_ntop, family), packed))
    if version == 4 and canonical != addrs:
        return None  # leading zeros and the like: ipaddress's rules decide
    lows = list(map(_from_big, packed))
    bits = _BITS[version]
    if version == 6 and any((low >> 32) in (0, 0xFFFF) for low in lows):
        return None  # ::a.b.c.d / ::ffff:a.b.c.d: inet_ntop writes the IPv4 part dotted
    plens = [bits] * len(tokens)
    if any(p[1] for p in parts):
        for i, (_addr, slash, plen_text) in enumerate(parts):
            if not slash:
                continue
            # Plain decimal only, as fast_entry (the text is ASCII: isdigit is 0-9 here).
            if not plen_text.isdigit() or len(plen_text) > 3 or (
                    len(plen_text) > 1 and plen_text[0] == "0"):
                return None
            plen = plens[i] = int(plen_text)
            if plen > bits or lows[i] & ((1 << (bits - plen)) - 1):
                return None  # too long, or host bits set: ipaddress says so
    entries = [f"{c}/{p}" for c, p in zip(canonical, plens, strict=True)]
    return entries, list(zip(repeat(version), lows, plens, strict=False))


def kernel_text(network: Network) -> str:
    """A network as the kernel's tools print it (nft, ipset, iptables-save all use inet_ntop):
    the same as `str` except for an IPv6 address with an IPv4 tail (::ffff:a.b.c.d, ::a.b.c.d),
    which `ipaddress` prints in hex. Written the other way, `plan` would show it as a change
    for ever."""
    if network.version == 4:
        return str(network)
    return f"{socket.inet_ntop(socket.AF_INET6, network.network_address.packed)}/" \
           f"{network.prefixlen}"


def kernel_cidr(cidr: str) -> str:
    """kernel_text for CIDR text."""
    return kernel_text(ipaddress.ip_network(cidr)) if cidr.startswith("::") else cidr


def kernel_entries(cidr: str) -> tuple[str, ...]:
    """Canonical CIDR text → what every backend takes: a /0 as its two /1s (an ipset
    `hash:net` takes prefix lengths from 1 only; both halves mean every address of the family
    all the same), anything else in kernel_text's spelling."""
    if cidr == "0.0.0.0/0":
        return "0.0.0.0/1", "128.0.0.0/1"
    if cidr == "::/0":
        return "::/1", "8000::/1"
    return (kernel_cidr(cidr),)


def entry_of(network: Network) -> tuple[str, Span]:
    return str(network), (network.version, int(network.network_address), network.prefixlen)


def span_bounds(span: Span) -> tuple[int, int]:
    """(first, last) address of an entry, as integers."""
    version, low, plen = span
    return low, low | ((1 << (_BITS[version] - plen)) - 1)


def disjoint_entries(entries: Iterable[str], spans: Iterable[Span], family: int
                     ) -> tuple[str, ...]:
    """The entries of one family, sorted, merged so that no two overlap (an interval set in the
    kernel refuses overlaps), as elements every backend takes and lists back alike: canonical
    CIDR text as the kernel prints it (kernel_text), and never a /0 (two /1s instead)."""
    merged = _disjoint(entries, spans, family)
    # Sorted by address: a /0 is alone, and what kernel_text writes otherwise (addresses
    # below 0:0:0:1::, all starting with "::") comes first; 100k others are not looked at.
    head = 0
    while head < len(merged) and (merged[head].startswith("::") or merged[head] == "0.0.0.0/0"):
        head += 1
    if not head:
        return merged
    return tuple(e for entry in merged[:head] for e in kernel_entries(entry)) + merged[head:]


def _disjoint(entries: Iterable[str], spans: Iterable[Span], family: int) -> tuple[str, ...]:
    # Spans sort by (family, address, prefix length): one family's are in that order too.
    pairs = sorted(p for p in zip(spans, entries, strict=True) if p[0][0] == family)
    bits = _BITS[family]
    last = -1
    disjoint = True
    for (_family, low, plen), _entry in pairs:
        if low <= last:
            disjoint = False
            break
        last = low | ((1 << (bits - plen)) - 1)
    if disjoint:
        # The usual case for a big list: collapsing (slow for 10k networks) would only merge
        # neighbours, and the kernel takes those as they are.
        return tuple(e for _span, e in pairs)
    nets = [ipaddress.ip_network(e) for _span, e in pairs]
    return tuple(str(n) for n in ipaddress.collapse_addresses(nets))  # type: ignore[type-var]
