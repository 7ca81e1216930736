"""How big a rule set fwsync takes: beyond these it refuses, with an error located at the file,
line and column where the limit is crossed, before any kernel call.

Measured on the development machines (2 cores, one namespace, `fwsync apply` from nothing):
an nftables set of 100k entries applied in 4.5 s with 288 MB of peak memory, 250k in 24 s and
685 MB, 500k in 103 s and 1.35 GB (a million took 332 s and 2.2 GB); 10k rules applied in
4.9 s (nftables, 228 MB) and 2.2 s (iptables), 25k in 16 s and 15 s. So the limits keep an
apply within seconds and a few hundred MB on both backends, and a typo (a list given the wrong
file, a port list pasted a thousand times) fails at once instead of after minutes.
"""

from __future__ import annotations

MAX_RULES_FILE_BYTES = 1 << 20  # a rules file: ~10k rules of ~100 bytes fit
MAX_LIST_FILE_BYTES = 8 << 20  # an address list (`define NAME file PATH`): 100k IPv6 lines fit
MAX_TOTAL_BYTES = 16 << 20  # every file of one rule set together
MAX_SET_ENTRIES = 100_000  # addresses and networks in one `define`
MAX_ENTRIES = 150_000  # in all `define`s together
MAX_RULES = 10_000  # allow/deny/reject/limit statements
# Kernel rules after expansion (each family, protocol, port list item, source port and
# container binding of a rule is one): what build and render hold in memory.
MAX_KERNEL_RULES = 20_000
# Of those, rules on the INPUT path for Docker's bindings (one per run of consecutive host
# ports of one container, family, protocol and host address): beyond this, one per family and
# protocol over their whole span (core/build.py), leaving room for the rules that name them.
MAX_INPUT_RULES = 5_000


def count(n: int) -> str:
    return f"{n:,}"
