import pytest
from hypothesis import given
from hypothesis import strategies as st

from fwsync.core.diff import diff, diff_lines

pytestmark = pytest.mark.unit


def test_no_changes_when_equal():
    state = {"ipv4 chain X": ("-A X -j DROP",)}
    assert diff("t", state, dict(state)).empty


def test_create_update_delete():
    plan = diff("t", {"a": ("1", "2"), "b": ("x",)}, {"b": ("y",), "c": ("z",)})
    ops = {(c.key, c.op, c.added, c.removed) for c in plan.changes}
    assert ops == {("a", "create", ("1", "2"), ()), ("b", "update", ("x",), ("y",)),
                   ("c", "delete", (), ("z",))}
    assert plan.counts == {"add": 3, "remove": 2, "objects": 3}


def test_order_change_in_a_chain_is_a_change():
    plan = diff("t", {"c": ("-A C -j RETURN", "-A C -j DROP")},
                {"c": ("-A C -j DROP", "-A C -j RETURN")})
    assert not plan.empty


def test_sorted_sets_diff_as_sets():
    even = tuple(f"{i:06}" for i in range(0, 100_000, 2))
    added, removed = diff_lines((*even, "999999"), even)
    assert added == ("999999",) and removed == ()


@given(st.lists(st.sampled_from("abcdef"), max_size=12), st.lists(st.sampled_from("abcdef"),
                                                                  max_size=12))
def test_diff_lines_accounts_for_every_line(want, have):
    added, removed = diff_lines(tuple(want), tuple(have))
    # Lines kept are common to both: what's left after removing `removed` from `have` equals what
    # is left after removing `added` from `want` (as multisets).
    rest_have, rest_want = list(have), list(want)
    for x in removed:
        rest_have.remove(x)
    for x in added:
        rest_want.remove(x)
    assert sorted(rest_have) == sorted(rest_want)
