"""The fast address-list path gives what `ipaddress` gives, or steps aside for it."""

from __future__ import annotations

import ipaddress
import itertools
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwsync.core.build import split_cidrs
from fwsync.rules.addresses import bulk_entries, disjoint_entries, fast_entry
from fwsync.rules.syntax import parse_sources

pytestmark = pytest.mark.unit


def _reference(text: str) -> tuple[str, tuple[int, int, int]] | None:
    try:
        n = ipaddress.ip_network(text)
    except ValueError:
        return None
    return str(n), (n.version, int(n.network_address), n.prefixlen)


networks = st.one_of(
    st.ip_addresses(v=4).flatmap(lambda a: st.integers(0, 32).map(
        lambda n: ipaddress.ip_network(f"{a}/{n}", strict=False))),
    st.ip_addresses(v=6).flatmap(lambda a: st.integers(0, 128).map(
        lambda n: ipaddress.ip_network(f"{a}/{n}", strict=False))))


def _spellings(n: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    addr = n.network_address
    out = [str(n), n.exploded, str(n).upper(), f"{addr}/{n.prefixlen:03d}",
           f"{addr}/+{n.prefixlen}"]
    if n.prefixlen == n.max_prefixlen:
        out += [str(addr), addr.exploded]
    if n.prefixlen and int(addr) < (1 << n.max_prefixlen) - 1:  # the last address has no next
        out.append(f"{addr + 1}/{n.prefixlen}")  # host bits set (mostly)
    return out


@settings(max_examples=500, deadline=None)
@given(networks)
def test_fast_entry_equals_ipaddress_or_steps_aside(network):
    for text in _spellings(network):
        fast = fast_entry(text)
        if fast is not None:
            assert fast == _reference(text), text


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF.:/ x%", max_size=45))
def test_fast_entry_never_accepts_what_ipaddress_refuses(text):
    fast = fast_entry(text)
    if fast is not None:
        assert fast == _reference(text), text


@pytest.mark.parametrize("text", ["::ffff:192.0.2.1", "::192.0.2.1", "::ffff:c000:201", "::1",
                                  "::", "0.0.0.0/0", "::/0", "01.2.3.4", "1.2.3.4/08",
                                  "2001:db8::/32", "2001:DB8:0:0:1::/80", "1.2.3.4/33"])
def test_fast_entry_on_the_odd_ones(text):
    fast = fast_entry(text)
    assert fast is None or fast == _reference(text)


def _split_reference(nets, family):
    """Sorted when no two overlap (neighbours are left apart), else collapsed; a /0 as its two
    /1s (an ipset refuses /0), each written as the kernel's tools write it (inet_ntop)."""
    mine = sorted((n for n in nets if n.version == family),
                  key=lambda n: (int(n.network_address), n.prefixlen))
    if not all(int(a.broadcast_address) < int(b.network_address)
               for a, b in itertools.pairwise(mine)):
        mine = list(ipaddress.collapse_addresses(mine))
    halves = [half for n in mine for half in (n.subnets() if n.prefixlen == 0 else [n])]
    return tuple(_ntop(n) for n in halves)


def _ntop(n):
    family = socket.AF_INET6 if n.version == 6 else socket.AF_INET
    return f"{socket.inet_ntop(family, n.network_address.packed)}/{n.prefixlen}"


@settings(max_examples=200, deadline=None)
@given(st.lists(networks, max_size=30))
def test_a_list_file_parses_as_ipaddress_reads_it(nets):
    text = "\n".join(str(n) for n in nets)
    result = parse_sources([("t.rules", "define s file s.txt")], lambda _: text)
    assert result.policy is not None
    got = result.policy.sets["s"]
    assert got.networks == tuple(nets)
    for family in (4, 6):
        want = _split_reference(nets, family)
        assert disjoint_entries(got.entries, got.spans, family) == want
        assert split_cidrs([str(n) for n in nets], family) == want


def _line_by_line(text: str) -> tuple[list[str], list[tuple[int, int, int]]] | None:
    """What the parser's line path makes of a list: each line's first word through fast_entry,
    else ipaddress; None when any line has a problem."""
    entries, spans = [], []
    for raw in text.split("\n"):
        items = raw.split("#", 1)[0].split()
        if not items:
            continue
        if len(items) > 1:
            return None
        got = fast_entry(items[0]) or _reference(items[0])
        if got is None:
            return None
        entries.append(got[0])
        spans.append(got[1])
    return entries, spans


_list_lines = st.one_of(
    networks.flatmap(lambda n: st.sampled_from(_spellings(n))),
    st.sampled_from(["", "   ", "# a comment", "\t", "1.2.3.4 # why", "2001:db8::1 5.6.7.8",
                     "::ffff:1.2.3.4", "2001:db8::1/64", "x", "1.2.3.4/33", "٨.1.1.1"]))


@settings(max_examples=400, deadline=None)
@given(st.lists(_list_lines, max_size=40))
def test_bulk_entries_equal_the_line_path_or_step_aside(lines):
    text = "\n".join(lines)
    bulk = bulk_entries(text)
    if bulk is not None:
        assert bulk == _line_by_line(text), text


def test_a_plain_list_takes_the_bulk_path():
    hosts = [f"2001:db8::{i:x}" for i in range(1, 500)] + [f"198.51.100.{i}" for i in range(99)]
    text = "# allowlist\n" + "\n".join([*hosts, "203.0.113.0/24  # office", "", "2001:db8:1::/48"])
    bulk = bulk_entries(text + "\n")
    assert bulk is not None and bulk == _line_by_line(text)
    assert bulk[0][0] == "2001:db8::1/128" and bulk[0][-1] == "2001:db8:1::/48"
    assert bulk_entries(text + "\n10.0.0.1 10.0.0.2\n") is None, "two on a line: located"
