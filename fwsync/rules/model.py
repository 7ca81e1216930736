"""Typed data for a parsed rule set. No behaviour beyond small, pure helpers.

Plain frozen dataclasses: every value here is made by the parser (fwsync/rules/syntax.py), which
has already checked each field and located every problem at its token, so a validating model
would only check the same things again — and building pydantic's validators cost ~0.2 s at every
start of the CLI, the pre-commit hook's `check` included.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Literal

Action = Literal["allow", "deny", "reject", "limit"]
DefaultAction = Literal["allow", "deny", "reject"]
Proto = Literal["tcp", "udp", "any"]
Severity = Literal["error", "warning"]
# ufw's logging levels: low logs what the default refuses (rate-limited), medium adds what rules
# refuse, high adds what is let in. `off`: nothing but rules that say `log`.
LogLevel = Literal["off", "low", "medium", "high"]
LOG_LEVELS: tuple[LogLevel, ...] = ("off", "low", "medium", "high")
# A rule's own logging, as ufw writes it: `allow log ...` logs the new connections it decides;
# `log-all` every packet it sees, which in fwsync's chains is the same (they see a connection's
# first packet only).
RuleLog = Literal["", "log", "log-all"]
# `mode audit`: every refusal (the default's too) is audited, not enforced (issue 21).
Mode = Literal["enforce", "audit"]
Network = IPv4Network | IPv6Network
# One address-list entry as integers: (IP version, first address, prefix length).
Span = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A problem found in a rules file, located at the offending token."""

    file: str
    line: int
    col: int
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (`check` and `plan --format json`)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Origin:
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


@dataclass(frozen=True, slots=True)
class PortRange:
    low: int
    high: int

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}:{self.high}"

    def covers(self, other: PortRange) -> bool:
        return self.low <= other.low and other.high <= self.high


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of a rule. At most one of net / set / container / service / network is given;
    none means `any`."""

    net: Network | None = None
    set: str | None = None
    # A container name, or a prefix pattern ending in `*` (only on the destination side).
    container: str | None = None
    ports: tuple[PortRange, ...] = ()
    # A Swarm service's name, or a prefix pattern ending in `*` (only on the destination side).
    service: str | None = None
    # A Docker network's name, or a prefix pattern ending in `*` (only on the destination side).
    network: str | None = None

    @property
    def is_any_address(self) -> bool:
        return self.net is None and self.set is None and self.container is None \
            and self.service is None and self.network is None

    @property
    def selector(self) -> tuple[str, str] | None:
        """("container" | "service", NAME) when the destination is named by Docker, else None.
        (A `network` destination selects more than bindings: core/build expands it.)"""
        if self.container is not None:
            return "container", self.container
        if self.service is not None:
            return "service", self.service
        return None


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    origin: Origin
    iface: str | None = None  # `eth+` is a prefix, as in iptables
    proto: Proto = "any"
    src: Endpoint = Endpoint()
    dst: Endpoint = Endpoint()
    comment: str | None = None
    log: RuleLog = ""
    # `audit deny|reject|limit ...`: decides nothing; what it would refuse is logged and counted
    # as `audit`, and the connection goes on to the next rule (core/audit.py).
    audit: bool = False


@dataclass(frozen=True, slots=True)
class AddressSet:
    """A `define`d list, as written (duplicates and overlaps included; the builder merges).

    Lists of 100k entries are common, so an entry is kept as text and integers, not as an
    `ipaddress` object (~10 µs each to make): `entries` holds each one's canonical CIDR text
    (what `str(ipaddress.ip_network(...))` gives), `spans` the same entries as integers."""

    name: str
    entries: tuple[str, ...]
    origin: Origin
    spans: tuple[Span, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def of(cls, name: str, networks: Iterable[Network], origin: Origin) -> AddressSet:
        nets = tuple(networks)
        return cls(name=name, entries=tuple(str(n) for n in nets), origin=origin,
                   spans=tuple((n.version, int(n.network_address), n.prefixlen) for n in nets))

    @property
    def networks(self) -> tuple[Network, ...]:
        """The entries as `ipaddress` networks (slow for big lists: for small callers)."""
        return tuple(ipaddress.ip_network(e) for e in self.entries)


@dataclass(frozen=True, slots=True)
class NetworkScope:
    """`protect direct-routing off to network NAME`: one network (or prefix pattern) the
    protection leaves to the rules."""

    network: str
    origin: Origin


@dataclass(frozen=True, slots=True)
class Policy:
    default: DefaultAction = "deny"
    default_origin: Origin | None = None
    rules: tuple[Rule, ...] = ()
    sets: dict[str, AddressSet] = field(default_factory=dict)
    protect_direct_routing: bool = True
    protect_localhost_publish: bool = True
    logging: LogLevel = "off"  # `logging LEVEL`
    logging_origin: Origin | None = None
    mode: Mode = "enforce"  # `mode audit|enforce`
    mode_origin: Origin | None = None
    # Networks whose direct routing is left to the rules while the protection is on elsewhere.
    direct_routing_off: tuple[NetworkScope, ...] = ()
    # The files `define NAME file PATH` read, so that whoever enforces the policy can notice
    # when they change (the daemon fingerprints them on every drift tick).
    list_files: tuple[str, ...] = ()
    # sha256 of the files as the loader read them (rules/load.py, rules_digest): which rules a
    # host enforces, comparable across hosts (the daemon's fwsync_rules_info). "" when built
    # in memory. Not part of equality: the same rules from another place are the same policy.
    digest: str = field(default="", compare=False)


def audited(policy: Policy, rule: Rule) -> bool:
    """The rule decides nothing (core/audit): written `audit ...`, or a refusal under `mode
    audit`."""
    return rule.audit or (policy.mode == "audit" and rule.action != "allow")
