"""Rule text with the addresses the rules language accepts, for the property tests that hold
every one of them to what both backends take (tests/unit/test_kernel_addresses.py,
tests/kernel/test_kernel_addresses.py): both families, /0 to /32 and /128, IPv4-mapped and
-compatible IPv6, zero-compressed forms, overlapping and adjacent networks whose collapse is a
/0, in defines and in runs of rules the renderers merge into one source set."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

_V4 = st.one_of(st.sampled_from(["0.0.0.0", "128.0.0.0", "198.51.100.0", "203.0.113.7"]),
                st.ip_addresses(v=4).map(str))
_V6 = st.one_of(st.sampled_from(["::", "8000::", "::ffff:198.51.100.7", "::198.51.100.7",
                                 "::ffff:0.0.0.0", "2001:db8::", "2001:db8:0:0:1::1"]),
                st.ip_addresses(v=6).map(str))


def _cidr(addr: str, plen: int) -> str:
    return _written(ipaddress.ip_network(f"{addr}/{plen}", strict=False), addr)


def _written(net: ipaddress.IPv4Network | ipaddress.IPv6Network, addr: str) -> str:
    """The network as a user may write it: in the spelling they used when no host bits were
    cleared (::ffff:a.b.c.d stays dotted), else as `ipaddress` prints it; a whole host bare."""
    text = addr if ipaddress.ip_address(addr) == net.network_address else str(net.network_address)
    return text if net.prefixlen == net.max_prefixlen else f"{text}/{net.prefixlen}"


def _spelled(text: str, exploded: bool) -> str:
    """Zero-compressed as written, or every group in full (`2001:0db8:0000:...`)."""
    if not exploded or ":" not in text:
        return text
    addr, slash, plen = text.partition("/")
    return ipaddress.ip_address(addr).exploded + slash + plen


networks = st.builds(
    _spelled,
    st.one_of(st.tuples(_V4, st.sampled_from([0, 1, 2, 8, 24, 31, 32])),
              st.tuples(_V6, st.sampled_from([0, 1, 2, 32, 64, 96, 120, 127, 128]))
              ).map(lambda p: _cidr(*p)),
    st.booleans())
# Halves and quarters whose collapse is a /0, overlapping ones among them.
_COVERS = st.sampled_from([["0.0.0.0/1", "128.0.0.0/1"], ["::/1", "8000::/1"],
                           ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/1"],
                           ["0.0.0.0/1", "0.0.0.0/2", "128.0.0.0/1", "192.0.0.0/2"],
                           ["0.0.0.0/0", "::/0"]])


@st.composite
def policies(draw: st.DrawFn) -> str:
    lines = ["default deny incoming"]
    define = draw(st.one_of(_COVERS, st.lists(networks, min_size=1, max_size=4)))
    lines.append(f"define ok {', '.join(define)}")
    lines.append("allow from $ok to any port 5432 proto tcp")
    # A run of one verdict: merged into one source set by the renderers.
    for net in draw(st.one_of(_COVERS, st.lists(networks, min_size=1, max_size=4))):
        lines.append(f"allow from {net} to any port 8080 proto tcp")
    lines.append(f"deny from {draw(networks)} to any port 22 proto tcp")
    lines.append(f"reject from any to {draw(networks)} port 9000 proto tcp")
    return "\n".join(lines) + "\n"
