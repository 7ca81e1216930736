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

Expr = dict[str, Any]
Batch = list[dict[str, Any]]


def in_table() -> dict[str, str]:
    """The keys that put a chain, set, rule or element in fwsync's table."""
    return {"family": FAMILY, "table": TABLE}
