"""Small builders for hand-made policies, so core tests don't depend on the parser."""

from __future__ import annotations

import ipaddress
from typing import Any

from fwsync.rules.model import AddressSet, Endpoint, Origin, Policy, PortRange, Rule

FILE = "rules/10-test.rules"


def origin(line: int, text: str = "") -> Origin:
    return Origin(file=FILE, line=line, text=text or f"rule {line}")


def ports(*items: int | tuple[int, int]) -> tuple[PortRange, ...]:
    return tuple(PortRange(low=i, high=i) if isinstance(i, int) else PortRange(low=i[0], high=i[1])
                 for i in items)


def net(text: str) -> Any:
    return ipaddress.ip_network(text)


def rule(line: int, action: str = "allow", *, src: Endpoint | None = None,
         dst: Endpoint | None = None, **kw: Any) -> Rule:
    return Rule(action=action, src=src or Endpoint(), dst=dst or Endpoint(),  # type: ignore[arg-type]
                origin=origin(line), **kw)


def aset(name: str, *nets: str) -> AddressSet:
    return AddressSet.of(name, (net(n) for n in nets), origin(99))


def policy(*rules: Rule, default: str = "deny", sets: tuple[AddressSet, ...] = (),
           **kw: Any) -> Policy:
    return Policy(default=default, rules=rules, sets={s.name: s for s in sets},  # type: ignore[arg-type]
                  default_origin=origin(1, f"default {default}"), **kw)
