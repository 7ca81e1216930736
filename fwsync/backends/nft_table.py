"""fwsync's nftables table: its family and name, its base chains' hook priorities, and the
shapes of the JSON the other nftables modules build. Pure.

Apart so that the rules (nftables_render), the sets (nft_sets), the transactions
(nft_transactions) and the printer (nft_state) share one definition of the table: each of them
imports this module, and it imports none of them.
"""

from __future__ import annotations

from typing import Any

TABLE = "fwsync"
FAMILY = "inet"
# Docker's filter chains (and iptables-nft's FORWARD) hook forward at priority 0 ("filter"):
# one less runs first, so a drop here happens before anything there can accept.
FORWARD_PRIORITY = -1
# ufw (through iptables-nft or -legacy) and iptables-nft's INPUT hook input at 0 as well: an
# fwsync drop comes first; its accept is not final, so the host's INPUT rules still decide.
INPUT_PRIORITY = -1

# The INPUT path's catch-all (a new connection to a socket in dockerd's cgroup) lives in a chain
# of its own, written in nft's text syntax: libnftables 1.0.6's JSON refuses `socket cgroupv2`
# and lists it without its level. Its rules are objects of their own kind in a Batch,
# {TEXT_RULE: {"chain": ..., "line": ...}}, never sent as JSON (nftables.py writes them).
PROXY_CHAIN = "proxy"
# Where a `limit` rule whose refusals are logged sends what it refuses over its rate
# (nftables_render): made only when a rule needs it.
LIMITED_CHAIN = "limited"
TEXT_RULE = "text_rule"

Expr = dict[str, Any]
Batch = list[dict[str, Any]]


def in_table() -> dict[str, str]:
    """The keys that put a chain, set, rule or element in fwsync's table."""
    return {"family": FAMILY, "table": TABLE}
