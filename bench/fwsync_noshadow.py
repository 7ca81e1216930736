"""`python -m fwsync` with the rules loader's shadow-warning pass switched off.

Only for setting up the benchmark's linear-rules configurations: that pass compares every rule
with every earlier one (O(N^2) in pure Python: ~160 s for 10k rules on the benchmark machine) and
only adds warnings, so skipping it changes nothing that fwsync writes to the kernel.
"""

from __future__ import annotations

import fwsync.rules.load as _load
from fwsync.cli import main
from fwsync.rules.model import Diagnostic
from fwsync.rules.model import Policy as _Policy


def _no_warnings(policy: _Policy) -> list[Diagnostic]:
    return []


setattr(_load, "shadowed", _no_warnings)  # noqa: B010 (mypy: not re-exported)

if __name__ == "__main__":
    main()
