"""A lookup's answer as the decision record shows it (router/rules/decision.py ``_jsonable``)."""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from router.rules.decision import LookupTrace, _jsonable


def _by_isinstance(value: Any) -> Any:
    """What ``_jsonable`` answered before its exact-type paths (issue 16)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _by_isinstance(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_by_isinstance(v) for v in value]
    return repr(value)


class _Kind(enum.StrEnum):
    MANAGER = "manager"


class _Thing:
    def __repr__(self) -> str:
        return "<thing>"


_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.just(_Kind.MANAGER),
    st.just(_Thing()),
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers()), inner, max_size=4),
        st.dictionaries(st.text(max_size=3), inner, max_size=4).map(OrderedDict),
        st.dictionaries(st.text(max_size=3), inner, max_size=4).map(MappingProxyType),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=12,
)


# No deadline: a loaded CI machine (2 workers on 2 cores) stalled one example
# past Hypothesis's 200 ms, a red run; speed is measured in bench/, not here.
@settings(deadline=None)
@given(_VALUES)
def test_exact_types_first_answer_what_the_isinstance_checks_answered(value: Any) -> None:
    """Every decision record converts its lookups' answers: plain types are
    recognised by their exact type first, and anything else (a subclass, a
    mapping that is no dict, a set) goes the way it went before, to the same result."""
    assert _jsonable(value) == _by_isinstance(value)
    assert LookupTrace("owner", "onec.responsible()", value).to_dict()["value"] == _by_isinstance(
        value
    )
