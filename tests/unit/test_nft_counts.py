"""How many elements the kernel holds for an nftables set fwsync writes (nft_counts): the
shapes below were measured on this machine's kernel (6.18) with nft 1.0.6 (a start and an end
element per interval, none at the top of the key space, one end element at zero when no
interval starts there)."""

from __future__ import annotations

import pytest

from fwsync.backends.netlink import attr
from fwsync.backends.nft_counts import count_nested, kernel_elements

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("elements", "held"), [
    (("10.0.0.0/24",), 3),
    (("10.0.0.0/24", "10.0.1.0/24"), 5),  # neighbours are not merged
    (("10.0.0.0/24", "10.0.2.0/24"), 5),
    (("0.0.0.0/8", "10.0.0.0/8"), 4),
    (("255.0.0.0/8",), 2),
    (("0.0.0.0/8", "255.0.0.0/8"), 3),
    (("10.0.0.1", "10.0.0.5"), 5),
])
def test_interval_sets_as_the_kernel_holds_them(elements: tuple[str, ...], held: int) -> None:
    assert kernel_elements(elements, "ipv4_addr", True) == held


def test_other_sets() -> None:
    assert kernel_elements(("2001:db8::1", "2001:db8::2"), "ipv6_addr", False) == 2
    assert kernel_elements(("2001:db8::/48", "ff00::/8"), "ipv6_addr", True) == 4
    assert kernel_elements(("80", "1000-2000"), "inet_service", True) == 5
    assert kernel_elements((), "ipv4_addr", True) == 0
    # An element of a form it does not know: no guess (the set is then listed).
    assert kernel_elements(("not an address",), "ipv4_addr", True) is None
    assert kernel_elements(("x",), "ether_addr", True) is None


def test_elements_are_counted_by_their_lengths() -> None:
    payload = attr(1, b"\0" * 20) + attr(1, b"\0" * 5) + attr(1, b"")
    assert count_nested(payload) == 3
    assert count_nested(b"") == 0
