"""iptables-save lines of fwsync's chains, its ipsets and the jump object → a Program (walk.py)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable

from fwsync.core.diff import State
from fwsync.verify.connection import Connection
from fwsync.verify.walk import (
    CT_STATES,
    AddrSet,
    Program,
    Rule,
    Test,
    Unreadable,
    iface_match,
    iface_test,
    negated,
    net_test,
    port_span,
    port_test,
    proto_test,
    source_in,
    state_test,
    steps_aside,
)

# The names fwsync gives its kernel objects (the backend's naming constants, written out here so
# that the verifier imports nothing of the renderers; tests/unit/test_verify_kernel.py holds
# them equal to the backend's).
IPT_FORWARD = "FWSYNC-FORWARD"
IPT_INPUT = "FWSYNC-INPUT"
IPT_SET_NAME = re.compile(r"^fws([46])-(.+)-[0-9a-f]{6}$")
# The conntrack label that says "fwsync's chain judged this connection's first packet" (the
# renderer's JUDGED_LABEL). A connection is walked as its first packet on its first pass
# through fwsync's chain: its entry is not confirmed yet and carries no label, so the label is
# only ever found set by a second pass, which gives the same verdict or none.
IPT_JUDGED_LABEL = "100"
_JUMP_LINE = re.compile(r"^(\S+) rule [0-9]+ -j (\S+)$")

class _IptSets:
    def __init__(self, state: State, family: int) -> None:
        self.state, self.family = state, family
        self.parsed: dict[str, AddrSet] = {}

    def get(self, kernel_name: str) -> AddrSet:
        m = IPT_SET_NAME.match(kernel_name)
        if m is None or int(m.group(1)) != self.family:
            raise Unreadable(f"set {kernel_name} is not one of fwsync's IPv{self.family} sets")
        key = f"ipv{self.family} set {m.group(2)}"
        if key not in self.state:
            raise Unreadable(f"set {kernel_name} is not listed")
        if key not in self.parsed:
            self.parsed[key] = AddrSet.of(self.family, self.state[key])
        return self.parsed[key]


def _always(_c: Connection) -> bool:
    return True


def _never(_c: Connection) -> bool:
    return False


def _ipt_rule(line: str, sets: _IptSets, chains: Iterable[str]) -> Rule:
    try:
        return _ipt_parse(line, sets, set(chains))
    except (Unreadable, ValueError, IndexError) as exc:
        return Rule(line, error=str(exc))


def _ipt_parse(line: str, sets: _IptSets, chains: set[str]) -> Rule:
    words = shlex.split(line)
    if words[:1] != ["-A"] or len(words) < 2:
        raise Unreadable("not an -A line")
    if words[-1:] and "-j" in words and words[words.index("-j") + 1] == "NFLOG":
        # A copy of the packet for fwsync's log (core/logging_rules): NFLOG does not end the
        # chain, whatever the rule matches; its hashlimit table is the log's alone.
        return Rule(line)
    tests: list[Test] = []
    kinds: list[str] = []
    target: tuple[str, str] = ("none", "")
    limit = False
    negate = False
    i = 2

    def add(test: Test, kind: str = "other") -> None:
        nonlocal negate
        tests.append(negated(test) if negate else test)
        kinds.append(kind)
        negate = False

    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        i += 2
        if w == "!":
            negate, i = True, i - 1
        elif w == "-s":
            add(net_test(nxt, lambda c: c.saddr), "other" if negate else "saddr")
        elif w == "-d":
            add(net_test(nxt, lambda c: c.packet_daddr))
        elif w in ("-i", "-o"):
            add(iface_test(iface_match(nxt, "+"), w == "-i"),
                "iif" if w == "-i" and not negate else "other")
        elif w == "-p":
            add(proto_test(nxt))
        elif w == "-m":
            if nxt not in ("conntrack", "set", "comment", "addrtype", "hashlimit", "tcp", "udp",
                           "connlabel"):
                raise Unreadable(f"match -m {nxt}")
        elif w == "--comment":
            pass
        elif w == "--ctstate":
            wanted = frozenset(nxt.split(","))
            if not wanted <= CT_STATES:
                raise Unreadable(f"--ctstate {nxt}")
            add(state_test(wanted),
                "state" if negate and wanted == {"NEW"} else "other")
        elif w in ("--ctorigdst", "--ctorigsrc"):
            add(net_test(nxt, (lambda c: c.daddr) if w == "--ctorigdst" else
                          (lambda c: c.saddr)))
        elif w in ("--ctorigdstport", "--ctorigsrcport", "--dport", "--sport"):
            lo, hi = port_span(nxt, ":")
            get: Callable[[Connection], int | None] = {
                "--ctorigdstport": lambda c: c.dport, "--ctorigsrcport": lambda c: c.sport,
                "--dport": lambda c: c.packet_dport, "--sport": lambda c: c.sport}[w]
            add(port_test(lo, hi, get))
        elif w == "--match-set":
            direction = words[i] if i < len(words) else ""
            i += 1
            if direction != "src":
                raise Unreadable(f"--match-set {nxt} {direction}")
            add(source_in(sets.get(nxt)))
        elif w == "--ctstatus":
            if nxt != "CONFIRMED":
                raise Unreadable(f"--ctstatus {nxt}")
            add(_never)  # the first packet: its entry is confirmed after the last hook
        elif w == "--label":
            if nxt != IPT_JUDGED_LABEL:
                raise Unreadable(f"--label {nxt}: not fwsync's")
            sets_it = words[i:i + 1] == ["--set"]
            if sets_it:
                if negate:
                    raise Unreadable(f"! --label {nxt} --set")
                i += 1
            # --set matches, having set it; without, the first pass finds no label
            add(_always if sets_it else _never)
        elif w == "--dst-type":
            if nxt != "LOCAL":
                raise Unreadable(f"--dst-type {nxt}")
            add(lambda c: c.local)
        elif w == "--hashlimit-above":
            if negate:
                raise Unreadable("! --hashlimit-above")
            limit = True
        elif w in ("--hashlimit-burst", "--hashlimit-mode", "--hashlimit-name",
                   "--hashlimit-htable-expire", "--hashlimit-htable-size",
                   "--hashlimit-htable-max", "--hashlimit-srcmask"):
            # The table's bounds (at its max hashlimit drops a new source: refused, as over
            # the rate) and the key (`--hashlimit-srcmask 64`: the source's /64) shape what
            # the meter counts, not whether a connection meets it: only checked for sense.
            if w == "--hashlimit-mode" and nxt != "srcip":
                raise Unreadable(f"--hashlimit-mode {nxt}")
            if w in ("--hashlimit-burst", "--hashlimit-htable-expire",
                     "--hashlimit-htable-size", "--hashlimit-htable-max") and not nxt.isdigit():
                raise Unreadable(f"{w} {nxt}")
            if w == "--hashlimit-srcmask" and not (
                    nxt.isdigit() and int(nxt) <= (32 if sets.family == 4 else 128)):
                raise Unreadable(f"{w} {nxt}")
        elif w in ("-j", "-g"):
            target = _ipt_target(w, nxt, chains)
            if target[0] == "reject" and words[i:i + 1] == ["--reject-with"]:
                i += 2
        else:
            raise Unreadable(f"{w}")
        if negate and w != "!":
            raise Unreadable(f"! {w}")
    return Rule(line, tuple(tests), target, limit, steps_aside(kinds))


def _ipt_target(flag: str, name: str, chains: set[str]) -> tuple[str, str]:
    if flag == "-j" and name in ("RETURN", "ACCEPT", "DROP", "REJECT"):
        return {"RETURN": ("return", ""), "ACCEPT": ("accept", ""), "DROP": ("drop", ""),
                "REJECT": ("reject", "")}[name]
    if name in chains:
        return ("jump" if flag == "-j" else "goto", name)
    raise Unreadable(f"target {name}")


def iptables_program(state: State, family: int, path: str, sets: _IptSets | None = None
                     ) -> Program:
    prefix = f"ipv{family} chain "
    names = [key[len(prefix):] for key in state if key.startswith(prefix)]
    sets = sets or _IptSets(state, family)
    chains = {name: [_ipt_rule(line, sets, names) for line in state[prefix + name]]
              for name in names}
    wanted = IPT_INPUT if path == "input" else IPT_FORWARD
    entered = False
    for line in state.get(f"ipv{family} jump", ()):
        if line.startswith("not reached: "):
            return Program(chains, None, frozenset())
        m = _JUMP_LINE.match(line)
        if m is None:
            return Program(chains, None, frozenset(), error=line)
        if m.group(2) == wanted and (m.group(1) in ("DOCKER-USER", "FORWARD")
                                     if wanted == IPT_FORWARD else m.group(1) == "INPUT"):
            entered = True
    if not entered or wanted not in chains:
        return Program(chains, None, frozenset())
    return Program(chains, wanted, frozenset({wanted}))
