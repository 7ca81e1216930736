"""Docker's firewall rules as each generation writes them, for the KernelLab (which writes them
by hand instead of running dockerd). Pure text: iptables-restore input, iptables argument lists
and nft scripts; the lab feeds them to a namespace's kernel.

Three layouts, taken from what the real daemons write (compared with a running dockerd of each
engine by tests/e2e/test_testbed.py) and from moby's generated dumps
(integration/network/bridge/iptablesdoc/generated/ and .../nftablesdoc/generated/ in moby's
repository, at tags v28.5.2 and docker-v29.7.2):

    "20.10"        20.10 up to 27.x: Docker's rules straight in FORWARD after `-j DOCKER-USER`,
                   DOCKER-USER ending in `-j RETURN`. (IPv6 DOCKER-USER: 23.0+; a lab option.)
    "28"           28.2.2 and later: FORWARD is just `-j DOCKER-USER`, `-j DOCKER-FORWARD`;
                   DOCKER-USER empty (no RETURN); unpublished ports dropped in DOCKER; raw
                   PREROUTING drops packets for a container address from outside its bridge.
    "29-nftables"  29's `firewall-backend: nftables`: tables `ip docker-bridges` and
                   `ip6 docker-bridges`, no iptables rules and no DOCKER-USER at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Layout = Literal["20.10", "28", "29-nftables"]
LAYOUTS: tuple[Layout, ...] = ("20.10", "28", "29-nftables")
IPTABLES_LAYOUTS: tuple[Layout, ...] = ("20.10", "28")
Proto = Literal["tcp", "udp"]


@dataclass(frozen=True)
class Published:
    """One `-p [host_ip:]host_port:ctr_port/proto` of a container at ctr (one family)."""

    ctr: str
    host_port: int
    ctr_port: int
    proto: Proto = "tcp"
    host_ip: str | None = None


@dataclass(frozen=True)
class Bridge:
    """A bridge network as Docker's nftables rules see it."""

    name: str
    subnet: str
    published: Sequence[Published] = field(default_factory=tuple)
    icc: bool = True  # inter-container communication (com.docker.network.bridge.enable_icc)
    masquerade: bool = True


def _fam(v6: bool) -> tuple[str, str]:
    return ("/128", "::1/128") if v6 else ("/32", "127.0.0.0/8")


# --------------------------------------------------------------------------- iptables


def iptables_base(layout: Layout, bridge: str, net: str, *, v6: bool,
                  docker_user: bool = True) -> str:
    """The rules a freshly started dockerd writes for its default bridge (no container yet), as
    iptables-save prints them; FORWARD's policy DROP as on a host where dockerd turned
    forwarding on itself."""
    if layout == "20.10":
        return _base_2010(bridge, net, v6, docker_user)
    if layout == "28":
        return _base_28(bridge, net, v6)
    raise ValueError(f"{layout!r} writes no iptables rules")


def _nat(bridge: str, net: str, v6: bool) -> str:
    local = _fam(v6)[1]
    return f"""*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d {local} -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s {net} ! -o {bridge} -j MASQUERADE
-A DOCKER -i {bridge} -j RETURN
COMMIT
"""


def _base_2010(bridge: str, net: str, v6: bool, docker_user: bool) -> str:
    user_chain = ":DOCKER-USER - [0:0]\n" if docker_user else ""
    user_jump = "-A FORWARD -j DOCKER-USER\n" if docker_user else ""
    user_return = "-A DOCKER-USER -j RETURN\n" if docker_user else ""
    return _nat(bridge, net, v6) + f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
{user_chain}{user_jump}-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o {bridge} -j DOCKER
-A FORWARD -i {bridge} ! -o {bridge} -j ACCEPT
-A FORWARD -i {bridge} -o {bridge} -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i {bridge} ! -o {bridge} -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o {bridge} -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
{user_return}COMMIT
"""


def _base_28(bridge: str, net: str, v6: bool) -> str:
    # The raw table exists from the start (empty until a container is published).
    return _nat(bridge, net, v6) + f"""*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-BRIDGE - [0:0]
:DOCKER-CT - [0:0]
:DOCKER-FORWARD - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-FORWARD
-A DOCKER ! -i {bridge} -o {bridge} -j DROP
-A DOCKER-BRIDGE -o {bridge} -j DOCKER
-A DOCKER-CT -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-ISOLATION-STAGE-1
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i {bridge} -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i {bridge} ! -o {bridge} -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-2 -o {bridge} -j DROP
COMMIT
"""


def iptables_publish(layout: Layout, bridge: str, p: Published, *, v6: bool,
                     first_for_ctr: bool = True) -> list[list[str]]:
    """The iptables commands (arguments after `iptables -w`) Docker runs for one published
    port, in its order. first_for_ctr: the container's first published port (28's raw drop is
    one per container address)."""
    plen = _fam(v6)[0]
    match = ["-p", p.proto, "-m", p.proto]
    dest = f"[{p.ctr}]:{p.ctr_port}" if v6 else f"{p.ctr}:{p.ctr_port}"
    dst = ["-d", p.host_ip + plen] if p.host_ip else []
    accept = ["-d", p.ctr + plen, "!", "-i", bridge, "-o", bridge, *match, "--dport",
              str(p.ctr_port), "-j", "ACCEPT"]
    if layout == "20.10":
        return [
            ["-t", "nat", "-A", "DOCKER", *dst, "!", "-i", bridge, *match, "--dport",
             str(p.host_port), "-j", "DNAT", "--to-destination", dest],
            ["-t", "nat", "-A", "POSTROUTING", "-s", p.ctr + plen, "-d", p.ctr + plen, *match,
             "--dport", str(p.ctr_port), "-j", "MASQUERADE"],
            ["-t", "filter", "-A", "DOCKER", *accept],
        ]
    if layout == "28":
        # IPv6 DNAT skips link-local sources; per-port ACCEPTs go in at the head of DOCKER,
        # before the bridge's unpublished-port DROP.
        skip_ll = ["!", "-s", "fe80::/10"] if v6 else []
        cmds = [["-t", "filter", "-I", "DOCKER", *accept],
                ["-t", "nat", "-A", "DOCKER", *dst, *skip_ll, "!", "-i", bridge, *match,
                 "--dport", str(p.host_port), "-j", "DNAT", "--to-destination", dest]]
        if first_for_ctr:
            cmds.append(["-t", "raw", "-A", "PREROUTING", "-d", p.ctr + plen, "!", "-i", bridge,
                         "-j", "DROP"])
        return cmds
    raise ValueError(f"{layout!r} writes no iptables rules")


# --------------------------------------------------------------------------- nftables (29)

NFT_FAMILIES = ("ip", "ip6")


def _nft_fam(v6: bool) -> str:
    return "ip6" if v6 else "ip"


def _dnat_rules(bridges: Sequence[Bridge], v6: bool) -> list[str]:
    fam = _nft_fam(v6)
    rules = []
    for b in bridges:
        for p in b.published:
            daddr = f"{fam} daddr {p.host_ip} " if p.host_ip else ""
            skip_ll = f"{fam} saddr != fe80::/10 " if v6 else ""  # IPv6 skips link-local
            to = f"[{p.ctr}]:{p.ctr_port}" if v6 else f"{p.ctr}:{p.ctr_port}"
            rules.append(f'iifname != "{b.name}" {daddr}{skip_ll}{p.proto} dport {p.host_port} '
                         f'counter dnat to {to} comment "DNAT"')
    return rules


def _raw_rules(bridges: Sequence[Bridge], v6: bool) -> list[str]:
    """One drop per published container address (per address, not per port, from 28.2)."""
    fam = _nft_fam(v6)
    return [f'{fam} daddr {ctr} iifname != "{b.name}" counter drop comment "DROP DIRECT ACCESS"'
            for b in bridges for ctr in dict.fromkeys(p.ctr for p in b.published)]


def _forward_in_rules(b: Bridge, v6: bool) -> list[str]:
    fam = _nft_fam(v6)
    return ["ct state established,related counter accept",
            f'iifname "{b.name}" counter {"accept" if b.icc else "drop"} comment "ICC"',
            *(f"{fam} daddr {p.ctr} {p.proto} dport {p.ctr_port} counter accept"
              for p in b.published),
            'counter drop comment "UNPUBLISHED PORT DROP"']


def _chain(name: str, rules: Sequence[str], hook: str = "") -> str:
    lines = ([f"\t\t{hook}"] if hook else []) + [f"\t\t{r}" for r in rules]
    return f"\tchain {name} {{\n" + "".join(f"{line}\n" for line in lines) + "\t}\n"


def nftables_tables(bridges: Sequence[Bridge], *, v6: bool, forward_policy: str = "accept"
                    ) -> str:
    """`table ip|ip6 docker-bridges` as Docker 29's nftables backend writes it, in `nft -f`
    syntax (`nft list` prints it back in the same shape). forward_policy: `drop` where dockerd
    had to turn forwarding on itself."""
    fam = _nft_fam(v6)
    local = "::1" if v6 else "127.0.0.0/8"
    parts = []
    for m in ("filter-forward-in", "filter-forward-out", "nat-postrouting-in",
              "nat-postrouting-out"):
        elements = ", ".join(f'"{b.name}" : jump {m}__{b.name}' for b in bridges)
        parts.append(f"\tmap {m}-jumps {{\n\t\ttype ifname : verdict\n"
                     + (f"\t\telements = {{ {elements} }}\n" if bridges else "") + "\t}\n")
    parts += [
        _chain("filter-FORWARD", ["oifname vmap @filter-forward-in-jumps",
                                  "iifname vmap @filter-forward-out-jumps"],
               f"type filter hook forward priority filter; policy {forward_policy};"),
        _chain("nat-OUTPUT", [f"{fam} daddr != {local} fib daddr type local counter "
                              "jump nat-prerouting-and-output"],
               # -100 is dstnat: nft before 1.0.7 (Debian 12) knows no name for it here
               "type nat hook output priority -100; policy accept;"),
        _chain("nat-POSTROUTING", ["iifname vmap @nat-postrouting-out-jumps",
                                   "oifname vmap @nat-postrouting-in-jumps"],
               "type nat hook postrouting priority srcnat; policy accept;"),
        _chain("nat-PREROUTING", ["fib daddr type local counter jump nat-prerouting-and-output"],
               "type nat hook prerouting priority dstnat; policy accept;"),
        _chain("nat-prerouting-and-output", _dnat_rules(bridges, v6)),
        _chain("raw-PREROUTING", _raw_rules(bridges, v6),
               "type filter hook prerouting priority raw; policy accept;"),
    ]
    for b in bridges:
        masq = [f'oifname != "{b.name}" {fam} saddr {b.subnet} counter masquerade '
                'comment "MASQUERADE"'] if b.masquerade else []
        parts += [_chain(f"filter-forward-in__{b.name}", _forward_in_rules(b, v6)),
                  _chain(f"filter-forward-out__{b.name}",
                         ["ct state established,related counter accept",
                          'counter accept comment "OUTGOING"']),
                  _chain(f"nat-postrouting-in__{b.name}", []),
                  _chain(f"nat-postrouting-out__{b.name}", masq)]
    return f"table {fam} docker-bridges {{\n" + "\n".join(parts) + "}\n"


def nftables_restart_script(v4: Sequence[Bridge], v6: Sequence[Bridge], *,
                            forward_policy: str = "accept") -> str:
    """One `nft -f` batch that deletes and recreates both tables, as dockerd does at every
    start (the `table X` lines first make the delete valid when the table does not exist)."""
    head = "".join(f"table {f} docker-bridges\ndelete table {f} docker-bridges\n"
                   for f in NFT_FAMILIES)
    return (head + nftables_tables(v4, v6=False, forward_policy=forward_policy)
            + nftables_tables(v6, v6=True, forward_policy=forward_policy))


def nftables_publish_script(v4: Sequence[Bridge], v6: Sequence[Bridge]) -> str:
    """One `nft -f` batch that brings the per-container chains up to date with what the bridges
    publish, inside the existing tables (as `docker run -p` does: the tables stay)."""
    out = []
    for fam, bridges, is_v6 in (("ip", v4, False), ("ip6", v6, True)):
        chains = [("nat-prerouting-and-output", _dnat_rules(bridges, is_v6)),
                  ("raw-PREROUTING", _raw_rules(bridges, is_v6)),
                  *((f"filter-forward-in__{b.name}", _forward_in_rules(b, is_v6))
                    for b in bridges)]
        for name, rules in chains:
            out.append(f"flush chain {fam} docker-bridges {name}\n")
            out += [f"add rule {fam} docker-bridges {name} {r}\n" for r in rules]
    return "".join(out)
