"""Is fwsync enforcing? The one predicate, from the kernel's state. Pure.

Enforcing means, per address family: a new connection from outside to a published port reaches
fwsync's first rule before anything else can accept it. `status`, `plan` (as drift), the daemon
(drift) and `doctor` all ask this module; none of them decides it on its own.

- iptables: FORWARD is walked from the top. A rule that cannot accept (DROP, REJECT, LOG, ...)
  is passed; fwsync's own jump, or an unconditional `-j DOCKER-USER` whose walk reaches fwsync's
  jump, means reached; someone's conditional `-j` to fwsync's own chain is passed (fwsync's
  rules judge what it sends, the rest comes back); anything else that could let the packet on
  (ACCEPT, RETURN, a jump to another chain, a conditional jump to DOCKER-USER) comes first, and
  the answer is no. An
  ACCEPT is final within the table, so whatever accepts before fwsync's jump bypasses it.
  INPUT is walked the same way for fwsync's jump to its INPUT-path chain (the ports
  docker-proxy serves: IPv6 to a container without IPv6): both paths must be reached.
- nftables: an `accept` only ends one base chain, so another table cannot let a packet past
  fwsync's; what matters is that fwsync's base chains are registered on the forward and input
  hooks before the filter priority (0) at which Docker's chains, iptables and ufw run, and that
  the forward one sends packets on to fwsync's rules. The same holds between iptables-nft and
  iptables-legacy: each is a hook of its own, and an ACCEPT in one does not skip the other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fwsync.core.ruleset import Family

FWSYNC_ENTRY = "FWSYNC-FORWARD"
FWSYNC_RULES = "FWSYNC-INBOUND"
FWSYNC_INPUT = "FWSYNC-INPUT"
DOCKER_USER = "DOCKER-USER"
# Targets that never let a packet on to a later rule's ACCEPT: final refusals, and those that
# only look or mark and then continue with the next rule.
_PASSIVE = {"DROP", "REJECT", "LOG", "NFLOG", "MARK", "CONNMARK", "TRACE", "AUDIT", "CT",
            "NOTRACK", "CLASSIFY", "DSCP", "TCPMSS", "TOS", "TTL", "HL", "SET"}
_TARGET = re.compile(r"(?:^| )-[jg] (\S+)")
FILTER_PRIORITY = 0  # Docker's nftables chains and both iptables variants' filter FORWARD


@dataclass(frozen=True)
class FamilyReach:
    family: Family
    reached: bool
    why: str  # the path when reached; what comes first (or is missing) when not


@dataclass(frozen=True)
class Enforcement:
    backend: str
    families: tuple[FamilyReach, ...]

    @property
    def enforcing(self) -> bool:
        return bool(self.families) and all(f.reached for f in self.families)

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(f"IPv{f.family}: {f.why}" for f in self.families if not f.reached)

    def summary(self) -> str:
        if self.enforcing:
            return "; ".join(f"IPv{f.family}: {f.why}" for f in self.families)
        return "; ".join(self.problems)


def _target(line: str) -> str | None:
    m = _TARGET.search(line)
    return m.group(1) if m else None


def _unconditional(line: str, chain: str, target: str) -> bool:
    return line == f"-A {chain} -j {target}"


def _walk(chain: str, chains: Mapping[str, Sequence[str]], path: str,
          entry: str = FWSYNC_ENTRY) -> tuple[bool | None, str]:
    """(True, path): fwsync's jump reached; (False, why): something may accept first;
    (None, ""): the chain ended without deciding (the walk goes on in the calling chain)."""
    for pos, line in enumerate(chains.get(chain, ()), start=1):
        here = f"{path}{chain} rule {pos}"
        target = _target(line)
        if _unconditional(line, chain, entry):
            return True, f"{here} → {entry}"
        if target is None or target in _PASSIVE:
            continue
        if line.endswith(f" -j {entry}"):
            # Someone's conditional jump to fwsync's own chain: what it sends there is judged
            # by fwsync's rules, and what they leave comes back here, on to fwsync's own jump.
            continue
        if chain == "FORWARD" and _unconditional(line, chain, DOCKER_USER):
            found, why = _walk(DOCKER_USER, chains, f"{here} → ")
            if found is not None:
                return found, why
            continue  # DOCKER-USER returned without a verdict: on with FORWARD
        return False, f"`{line}` ({here}) comes before fwsync's jump and may accept"
    return None, ""


def iptables_reach(family: Family, chains: Mapping[str, Sequence[str]]) -> FamilyReach:
    """`chains`: the filter table of the variant fwsync writes, chain → its `-A` lines in
    order (as iptables-save lists them)."""
    if FWSYNC_ENTRY not in chains or FWSYNC_RULES not in chains:
        return FamilyReach(family, False, "fwsync's chains are missing")
    if not any(_target(line) == FWSYNC_RULES for line in chains[FWSYNC_ENTRY]) \
            or not chains[FWSYNC_RULES]:
        return FamilyReach(family, False, f"{FWSYNC_ENTRY} does not send packets to fwsync's "
                                          "rules, or they are empty")
    found, why = _walk("FORWARD", chains, "")
    if found is None:
        return FamilyReach(family, False, "nothing in FORWARD leads to fwsync's chains")
    if not found:
        return FamilyReach(family, False, why)
    if FWSYNC_INPUT not in chains:
        return FamilyReach(family, False, "fwsync's INPUT-path chain is missing: the ports "
                                          "docker-proxy serves are not judged")
    found_in, why_in = _walk("INPUT", chains, "", FWSYNC_INPUT)
    if not found_in:
        return FamilyReach(family, False, why_in or "nothing in INPUT leads to fwsync's "
                                                    "INPUT-path chain")
    return FamilyReach(family, True, f"{why}; {why_in}")


@dataclass(frozen=True)
class NftBaseChain:
    """fwsync's base chain as the kernel lists it."""

    hook: str | None  # None: not a base chain (or missing)
    priority: int | None
    jumps_to_rules: bool  # a rule of it sends packets on to fwsync's rule chain
    rules_present: bool  # fwsync's rule chain holds rules
    dormant: bool = False  # the table is switched off (`flags dormant`): none of it runs


def nftables_reach(chain: NftBaseChain | None, input_chain: NftBaseChain | None = None
                   ) -> tuple[FamilyReach, ...]:
    """The inet table serves both families alike. `input_chain`: fwsync's input-hook base chain
    (the ports docker-proxy serves), which must be registered before the filter priority too."""
    if chain is not None and chain.dormant:
        why = "fwsync's table is dormant: the kernel runs none of its chains"
    elif chain is None or chain.hook is None:
        why = "fwsync's base chain is missing: no hook sends packets to its table"
    elif chain.hook != "forward":
        why = f"fwsync's base chain hooks {chain.hook}, not forward"
    elif chain.priority is None or chain.priority >= FILTER_PRIORITY:
        why = (f"fwsync's base chain runs at priority {chain.priority}, not before the filter "
               f"priority ({FILTER_PRIORITY}) of Docker's and iptables' chains")
    elif not chain.jumps_to_rules or not chain.rules_present:
        why = "fwsync's base chain does not send packets to its rules, or they are empty"
    elif input_chain is None or input_chain.hook != "input" or input_chain.priority is None \
            or input_chain.priority >= FILTER_PRIORITY:
        why = ("fwsync's input base chain is missing or does not run before the filter priority "
               f"({FILTER_PRIORITY}) of ufw's and iptables' INPUT: the ports docker-proxy serves "
               "are not judged first")
    else:
        path = (f"hook forward, priority {chain.priority} → fwsync's rules; hook input, "
                f"priority {input_chain.priority}")
        return FamilyReach(4, True, path), FamilyReach(6, True, path)
    return FamilyReach(4, False, why), FamilyReach(6, False, why)
