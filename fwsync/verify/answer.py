"""One connection, as `explain` asks it: what fwsync's objects, as the kernel lists them, do to
it on a binding it reaches. The same evaluator and the same stand-ins for what the question
leaves open (an arriving interface and source port no rule names; without `--to`, a host
address no rule names) as agree.py's check over every source."""

from __future__ import annotations

from fwsync.core.diff import State
from fwsync.core.matching import IPAddress
from fwsync.core.observed import PublishedPort
from fwsync.core.ruleset import Ruleset
from fwsync.verify.agree import binding_connection, destinations, unnamed_stand_ins
from fwsync.verify.connection import Path
from fwsync.verify.kernel import Reading


def kernel_answer(ruleset: Ruleset, reading: Reading, binding: PublishedPort,
                  source: IPAddress, to: IPAddress | None, via_proxy: bool) -> str:
    """The kernel's verdict for `source` connecting to `binding` (through docker-proxy on the
    input path when `via_proxy`): allow, deny, reject, limit, unjudged or unreadable: ..."""
    iif, sport = unnamed_stand_ins(ruleset)
    path: Path = "input" if via_proxy else ("direct" if binding.routed else "dnat")
    daddr = str(to) if to is not None else destinations(ruleset, binding)[-1]
    return reading.verdict(binding_connection(ruleset, binding, path, str(source), daddr, iif,
                                              sport))


def kernel_answers(ruleset: Ruleset, backend: str, state: State,
                   asked: list[tuple[PublishedPort, IPAddress, IPAddress | None, bool]]
                   ) -> tuple[str, ...]:
    """kernel_answer for each (binding, source, to, via_proxy), the listing parsed once."""
    reading = Reading(backend, state)
    return tuple(kernel_answer(ruleset, reading, *q) for q in asked)
