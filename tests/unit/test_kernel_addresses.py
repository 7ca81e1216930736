"""Every address the rules language accepts reaches the backends as something the kernel takes
and lists back the same: never a /0 in a set (an ipset `hash:net` refuses it) or as iptables'
`-s` (iptables-save leaves it out), and every address written as the kernel's tools print it
(inet_ntop: ::ffff:a.b.c.d dotted), so a re-plan finds no difference. A property over rule
text the parser accepts, not a list of cases."""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest
from hypothesis import given, settings

from fwsync.backends import iptables_render, nftables_render
from fwsync.core.build import build_ruleset
from fwsync.core.observed import DockerState
from fwsync.rules.syntax import parse_sources
from tests.address_policies import policies

pytestmark = pytest.mark.unit

def _inet_ntop(text: str) -> str:
    addr, _, plen = text.partition("/")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    again = socket.inet_ntop(family, socket.inet_pton(family, addr))
    return again + (f"/{plen}" if plen else "")


def _nft_addresses(item: Any) -> list[tuple[str, int | None]]:
    """(address, prefix length or None) of every address in nft JSON."""
    if isinstance(item, dict):
        if "prefix" in item:
            return [(item["prefix"]["addr"], item["prefix"]["len"])]
        return [a for v in item.values() for a in _nft_addresses(v)]
    if isinstance(item, list):
        return [a for v in item for a in _nft_addresses(v)]
    if isinstance(item, str) and re.fullmatch(r"[0-9a-f:.]+", item) and (
            ":" in item or item.count(".") == 3):
        return [(item, None)]
    return []


@settings(max_examples=150, deadline=None)
@given(policies())
def test_every_accepted_address_is_one_both_backends_take_and_list_alike(text: str) -> None:
    parsed = parse_sources([("t.rules", text)], lambda path: "")
    errors = [d for d in parsed.diagnostics if d.severity == "error"]
    if errors:
        # Refused: then at its place in the file.
        assert all(d.file == "t.rules" and d.line >= 1 and d.col >= 1 for d in errors)
        return
    ruleset = build_ruleset(parsed.policy, DockerState()).ruleset
    for family in (4, 6):
        objects = iptables_render.render_family(ruleset, family, "DOCKER-USER")  # type: ignore[arg-type]
        for key, lines in objects.items():
            if " set " in key:
                for element in lines:
                    assert "/0" not in element, f"{key}: {element} (ipset refuses /0)"
                    assert element == _inet_ntop(element), f"{key}: {element}"
            else:
                for line in lines:
                    for option, addr in re.findall(r"(-s|-d|--ctorigdst) (\S+)", line):
                        # iptables-save omits `-s 0.0.0.0/0` (it prints --ctorigdst's /0).
                        assert option == "--ctorigdst" or not addr.endswith("/0"), line
                        assert addr == _inet_ntop(addr), line
    for obj in nftables_render.table_objects(ruleset):
        for addr, plen in _nft_addresses(obj):
            assert addr == _inet_ntop(addr), obj
            if "set" in obj:
                assert plen != 0, obj
