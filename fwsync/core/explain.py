"""`fwsync explain`: the verdict for one hypothetical connection. Pure.

It walks the very Ruleset that `build_ruleset` makes and the backends render, in kernel order
(protections, the rules, the default), with the matcher `status` and `doctor` use too
(fwsync.core.matching). So the answer is the kernel's, and the kernel and e2e tests check it
against real packets.

What the question leaves open (the arriving interface, the client's source port, and without
`--to` the host address of an all-address binding) can't decide: a rule that hinges on it is
listed as an exception ("unless ... when arriving on eth0"), and the walk goes on to the
first rule that matches whatever the open parts are.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal, cast

from fwsync.core.exposure_report import governed, through_docker_proxy
from fwsync.core.kernel_text import shown
from fwsync.core.matching import IPAddress, Question, audits, candidates, localhost_protected
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.core.ruleset import L4, KernelRule, Ruleset

Verdict = Literal["allow", "deny", "reject", "limit"]
# allow|deny|reject|limit: fwsync's rules decide. not-published: nothing is published there, the
# host's own firewall decides. not-governed: published, but the connection would bypass
# fwsync's rules. depends: bindings reached disagree (give --to). unknown: Docker could not be
# asked, so what is published is unknown.
Outcome = Literal["allow", "deny", "reject", "limit", "not-published", "not-governed", "depends",
                  "unknown"]


class BadQuestion(ValueError):
    """The connection asked about is malformed (one line, says what to write instead)."""


@dataclass(frozen=True)
class Connection:
    source: IPAddress
    port: int
    proto: L4
    to: IPAddress | None = None  # the host address the client connects to; None: any

    @property
    def family(self) -> Literal[4, 6]:
        return 6 if self.source.version == 6 else 4

    def __str__(self) -> str:
        to = f" to {self.to}" if self.to is not None else ""
        return f"{self.source}{to} port {self.port}/{self.proto}"


_PORT = re.compile(r"[0-9]{1,5}")  # ASCII digits only: str.isdigit takes Arabic-Indic and ²


def _said(text: str) -> str:
    """What the user wrote, for a one-line message: escaped, and cut when long."""
    text = shown(text)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _address(text: str, what: str) -> IPAddress:
    try:
        address = ipaddress.ip_address(text.strip("[]")) if len(text) <= 64 else None
    except ValueError:
        address = None
    if address is None or getattr(address, "scope_id", None):  # fe80::1%eth0: not one address
        raise BadQuestion(f"{what} {_said(text)} is not an IP address (one address, e.g. "
                          f"198.51.100.7 or 2001:db8::7)")
    return address


def parse_connection(source: str, hostport: str, to: str | None = None) -> Connection:
    """`198.51.100.7`, `5432/tcp` (proto defaults to tcp), optional `--to 198.51.100.1`."""
    src = _address(source, "SOURCE")
    number, _, proto = hostport.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in ("tcp", "udp"):
        raise BadQuestion(f"HOSTPORT {_said(hostport)}: protocol must be tcp or udp "
                          "(e.g. 5432/tcp)")
    if not _PORT.fullmatch(number) or not 1 <= int(number) <= 65535:
        raise BadQuestion(f"HOSTPORT {_said(hostport)}: the port must be a number from 1 to "
                          "65535 (e.g. 5432/tcp)")
    dst = _address(to, "--to") if to is not None else None
    if dst is not None and dst.version != src.version:
        raise BadQuestion(f"--to {dst} and SOURCE {src} are of different address families")
    l4: L4 = "udp" if proto == "udp" else "tcp"
    return Connection(source=src, port=int(number), proto=l4, to=dst)


@dataclass(frozen=True)
class Unless:
    """An earlier rule that decides instead, but only under a condition the question left open."""

    action: Verdict
    origin: str
    rule: str  # the statement as the user wrote it
    when: str  # e.g. "arriving on eth0", "connecting to 198.51.100.1"


@dataclass(frozen=True)
class Decided:
    action: Verdict
    origin: str  # file:line, "protect localhost-publish", or "built-in default"
    rule: str  # the statement as the user wrote it (or the default's words)
    unless: tuple[Unless, ...] = ()
    # Audited rules passed on the way (core/audit): counted and logged as what they would do
    # (`when`: "" when the connection meets them whole), deciding nothing.
    audited: tuple[Unless, ...] = ()


@dataclass(frozen=True)
class Reach:
    """One published binding the connection reaches, and what decides for it."""

    binding: PublishedPort
    governed: bool  # False: it would bypass fwsync's rules
    decided: Decided
    # True: served by docker-proxy on the host's INPUT path (IPv6 to a container without IPv6),
    # where the host's own INPUT firewall (ufw) decides after fwsync.
    docker_proxy: bool = False


@dataclass(frozen=True)
class Explanation:
    connection: Connection
    outcome: Outcome
    reaches: tuple[Reach, ...]
    # What fwsync's rules decide for this connection whatever is published (the answer for a
    # port published later, before the next apply changes container rules).
    if_published: Decided
    notes: tuple[str, ...]

    @property
    def decided(self) -> Decided | None:
        """The one rule or default that decides, when there is one."""
        if self.outcome in ("allow", "deny", "reject", "limit"):
            return self.reaches[0].decided if self.reaches else self.if_published
        return None


def _default(ruleset: Ruleset) -> Decided:
    origin = ruleset.default_origin
    if origin is None:
        return Decided(ruleset.default, "built-in default", f"default {ruleset.default}")
    if ruleset.audit_default is not None:
        return Decided(ruleset.default, str(origin),
                       f"{origin.text} (audited: decides nothing, lets the connection on)")
    return Decided(ruleset.default, str(origin), origin.text)


def _audited(ruleset: Ruleset, q: Question, to_default: bool) -> tuple[Unless, ...]:
    found: dict[tuple[str, str], Unless] = {}
    for rule, needs in audits(ruleset, q):
        when = " and ".join(needs)
        found.setdefault((str(rule.origin), when),
                         Unless(rule.action, str(rule.origin), rule.origin.text, when))
    if to_default and ruleset.audit_default is not None:
        origin = ruleset.default_origin
        action = cast(Verdict, ruleset.audit_default)
        found[("default", "")] = Unless(action, str(origin) if origin else "built-in default",
                                        origin.text if origin else f"default {action}", "")
    return tuple(found.values())


def decide(ruleset: Ruleset, conn: Connection, daddr: IPAddress | None) -> Decided:
    """The kernel's walk through FWSYNC-INBOUND / chain inbound for one new DNATed connection
    whose original destination is `daddr` (None: not known) and port `conn.port`."""
    q = Question(conn.family, conn.proto, conn.port, daddr, conn.source)
    if localhost_protected(ruleset, q):
        return Decided("deny", "protect localhost-publish",
                       "ports published on a loopback address are for this host only")
    unless: dict[tuple[str, str], Unless] = {}
    for rule, needs in candidates(ruleset, q):
        if not needs:
            return Decided(rule.action, str(rule.origin), rule.origin.text,
                           tuple(unless.values()), _audited(ruleset, q, False))
        _add_exception(unless, rule, " and ".join(needs))
    default = _default(ruleset)
    return Decided(default.action, default.origin, default.rule, tuple(unless.values()),
                   _audited(ruleset, q, True))


def _add_exception(unless: dict[tuple[str, str], Unless], rule: KernelRule, when: str) -> None:
    # One policy rule becomes several kernel matches (tcp + udp, ports, bindings): list it once.
    key = (str(rule.origin), when)
    if key not in unless:
        unless[key] = Unless(rule.action, str(rule.origin), rule.origin.text, when)


def reached(docker: DockerState, conn: Connection) -> tuple[PublishedPort, ...]:
    """The bindings a connection from `conn.source` to `conn.to` (or any host address) hits."""
    return tuple(
        p for p in docker.ports
        if p.host_port == conn.port and p.proto == conn.proto and p.family == conn.family
        and (conn.to is None or p.all_addresses or ipaddress.ip_address(p.host_ip) == conn.to)
    )


def _bridge_notes(ruleset: Ruleset, conn: Connection) -> list[str]:
    """What the answer below does not cover: a source in a trusted network's subnet is that
    network's own when it arrives on the network's bridge (not judged, core/bridges.py);
    arriving anywhere else, or on a bridge not trusted, it is judged as below."""
    notes = []
    for bridge in ruleset.bridges:
        for subnet in bridge.subnets_for(conn.family):
            if conn.source in ipaddress.ip_network(subnet):
                notes.append(
                    f"{conn.source} is in the subnet of Docker network "
                    f"{shown(bridge.network)!r}, {subnet}: arriving on its bridge "
                    f"{shown(bridge.name)!r} the connection is the network's own and fwsync "
                    "does not judge it; arriving on any other interface it is judged as below")
    notes.extend(f"{r.note}." for r in ruleset.refused_bridges)
    return notes


def explain(ruleset: Ruleset, docker: DockerState, conn: Connection) -> Explanation:
    notes: list[str] = []
    if_published = decide(ruleset, conn, conn.to)
    if docker.error is not None:
        notes.append(f"Docker could not be asked ({docker.error}): which container (if any) "
                     "is published on this port is unknown; `container` rules match nothing")
        return Explanation(conn, "unknown", (), if_published, tuple(notes))
    if docker.stale is not None:
        notes.append(f"Docker could not be asked ({docker.stale}): answered from what it "
                     "reported when the rules were last applied, which is what the kernel holds")
    notes.extend(_bridge_notes(ruleset, conn))
    reaches = []
    judged = governed(ruleset, docker.ports)
    for binding in reached(docker, conn):
        # A binding on one address fixes the original destination; 0.0.0.0 / :: leaves it open.
        daddr = conn.to if conn.to is not None or binding.all_addresses else \
            ipaddress.ip_address(binding.host_ip)
        proxy = through_docker_proxy(binding)
        reach = Reach(binding, binding in judged, decide(ruleset, conn, daddr), proxy)
        reaches.append(reach)
        if proxy and reach.decided.action in ("allow", "limit"):
            notes.append(f"IPv6 connections to {binding.host_port}/{binding.proto} go through "
                         "docker-proxy on the host's INPUT path (the container has no IPv6 "
                         "address): fwsync's rules decide there too, and what they allow must "
                         "also pass the host's own INPUT firewall (e.g. ufw)")
        if binding.routed:
            notes.append(f"{binding.host_ip} is {binding.container}'s address on network "
                         f"{binding.routed}, which Docker routes without NAT (gateway mode "
                         "routed): clients connect to it directly")
    if not reaches:
        notes.append(f"nothing is published on {conn.port}/{conn.proto} for IPv{conn.family}: "
                     "the connection is the host's own business (its INPUT firewall, e.g. ufw)")
        return Explanation(conn, "not-published", (), if_published, tuple(notes))
    outcomes = {r.decided.action if r.governed else "not-governed" for r in reaches}
    outcome: Outcome
    if len(outcomes) > 1:
        outcome = "depends"
        notes.append("the bindings reached decide differently: give --to ADDR (the host address "
                     "the client connects to) for one answer")
    else:
        (outcome,) = outcomes  # type: ignore[assignment]
    return Explanation(conn, outcome, tuple(reaches), if_published, tuple(notes))
