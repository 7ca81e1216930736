"""The fast address-list path gives what `ipaddress` gives, or steps aside for it."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwsync.core.build import split_cidrs
from fwsync.rules.addresses import disjoint_entries, fast_entry
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
    """Sorted when no two overlap (neighbours are left apart), else collapsed."""
    mine = sorted((n for n in nets if n.version == family),
                  key=lambda n: (int(n.network_address), n.prefixlen))
    if all(int(a.broadcast_address) < int(b.network_address) for a, b in itertools.pairwise(mine)):
        return tuple(str(n) for n in mine)
    return tuple(str(n) for n in ipaddress.collapse_addresses(mine))


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
