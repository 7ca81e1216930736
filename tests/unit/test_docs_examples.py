"""Every ```rules block in the user docs is valid fwsync rules: parsed exactly as `fwsync check`
parses a file (the same parser, then the shadowed-rule warnings), with no error and no warning.

A block is one self-contained rules file. `define NAME file PATH` in a block reads PATH relative
to examples/rules-repo/rules/, the example repository whose lists the docs show.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from fwsync.rules.load import read_list
from fwsync.rules.shadow import shadowed
from fwsync.rules.syntax import parse_sources

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
# Every document, so that a new page's examples are checked too.
DOCS = ("README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
        "examples/rules-repo/README.md", "vagrant/README.md")
LISTS_BASE = REPO / "examples" / "rules-repo" / "rules"
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.MULTILINE | re.DOTALL)


def rules_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the fence, body) of each ```rules block."""
    return [(text.count("\n", 0, m.start()) + 1, m.group("body")) for m in FENCE.finditer(text)
            if m.group("info").strip().split(" ")[0] == "rules"]


def examples() -> list[Any]:
    found = []
    for doc in DOCS:
        path = REPO / doc
        if path.exists():
            found += [pytest.param(doc, line, body, id=f"{doc}:{line}")
                      for line, body in rules_blocks(path.read_text())]
    return found


def test_the_language_reference_has_examples() -> None:
    # Guards the collection itself: a renamed fence or a moved doc would otherwise test nothing.
    assert len(rules_blocks((REPO / "docs/rules-language.md").read_text())) >= 10
    assert len(rules_blocks((REPO / "README.md").read_text())) >= 1


def test_block_extraction_finds_only_rules_fences() -> None:
    text = "a\n```rules\nallow 80/tcp\n```\n```sh\nfwsync check\n```\n  ```rules\n  deny 1\n  ```\n"
    assert rules_blocks(text) == [(2, "allow 80/tcp\n"), (8, "  deny 1\n")]


@pytest.mark.parametrize(("doc", "line", "body"), examples())
def test_doc_example_is_valid_rules(doc: str, line: int, body: str) -> None:
    # Padded so that problems carry the doc's own line numbers (the file name is only there
    # for `define ... file` paths to resolve against the example repository).
    name = str(LISTS_BASE / Path(doc).name)
    result = parse_sources([(name, "\n" * line + body)], read_list)
    problems = [str(d) for d in result.diagnostics]
    if result.policy is not None:
        problems += [str(d) for d in shadowed(result.policy)]
    assert problems == [], f"{doc}:{line}: the example's rules have problems"
