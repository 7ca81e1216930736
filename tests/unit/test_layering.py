"""The layers import downwards only: the rules language knows nothing of the core that builds
on it, and an adapter (observe) nothing of the commands (doctor) that use it. Read from the
source's imports, so a new one that crosses a layer fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

FWSYNC = Path(__file__).resolve().parents[2] / "fwsync"


def imported(package: str) -> dict[str, set[str]]:
    """Module file → the fwsync modules it imports."""
    out: dict[str, set[str]] = {}
    for path in sorted((FWSYNC / package).glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        out[f"{package}/{path.name}"] = {n for n in names if n.startswith("fwsync.")}
    return out


@pytest.mark.parametrize(("package", "above"), [
    ("rules", ("fwsync.core", "fwsync.backends", "fwsync.observe", "fwsync.doctor")),
    ("core", ("fwsync.backends", "fwsync.observe", "fwsync.doctor", "fwsync.daemon",
              "fwsync.cli", "fwsync.reconcile")),
    ("observe", ("fwsync.doctor", "fwsync.daemon", "fwsync.cli", "fwsync.reconcile")),
])
def test_a_layer_imports_nothing_above_it(package: str, above: tuple[str, ...]) -> None:
    crossing = {module: sorted(n for n in names if n.startswith(above))
                for module, names in imported(package).items()}
    assert {m: n for m, n in crossing.items() if n} == {}
