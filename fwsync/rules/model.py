"""Typed data for a parsed rule set. No behaviour beyond small, pure helpers."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Literal

from pydantic import BaseModel, ConfigDict

Action = Literal["allow", "deny", "reject", "limit"]
DefaultAction = Literal["allow", "deny", "reject"]
Proto = Literal["tcp", "udp", "any"]
Severity = Literal["error", "warning"]
Network = IPv4Network | IPv6Network


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Diagnostic(Frozen):
    """A problem found in a rules file, located at the offending token."""

    file: str
    line: int
    col: int
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"


class Origin(Frozen):
    """Where a statement came from, and its text as the user wrote it (for messages)."""

    file: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def short(self) -> str:
        """FILE:LINE with the file's name only, for kernel comments (the rules dir may move)."""
        return f"{self.file.rsplit('/', 1)[-1]}:{self.line}"


class PortRange(Frozen):
    low: int
    high: int

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}:{self.high}"

    def covers(self, other: PortRange) -> bool:
        return self.low <= other.low and other.high <= self.high


class Endpoint(Frozen):
    """One side of a rule. At most one of net / set / container is given; none means `any`."""

    net: Network | None = None
    set: str | None = None
    # A container name, or a prefix pattern ending in `*` (only on the destination side).
    container: str | None = None
    ports: tuple[PortRange, ...] = ()

    @property
    def is_any_address(self) -> bool:
        return self.net is None and self.set is None and self.container is None


class Rule(Frozen):
    action: Action
    iface: str | None = None  # `eth+` is a prefix, as in iptables
    proto: Proto = "any"
    src: Endpoint = Endpoint()
    dst: Endpoint = Endpoint()
    comment: str | None = None
    origin: Origin


class AddressSet(Frozen):
    name: str
    networks: tuple[Network, ...]
    origin: Origin


class Policy(Frozen):
    default: DefaultAction = "deny"
    default_origin: Origin | None = None
    rules: tuple[Rule, ...] = ()
    sets: dict[str, AddressSet] = {}
    protect_direct_routing: bool = True
    protect_localhost_publish: bool = True
    # The files `define NAME file PATH` read, so that whoever enforces the policy can notice
    # when they change (the daemon fingerprints them on every drift tick).
    list_files: tuple[str, ...] = ()
