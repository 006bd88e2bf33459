"""router/errors.py draws the one exception tree in its docstring
(docs/style.md, as httpx's ``_exceptions.py``); a class added without its line
leaves a plugin author reading the tree unaware of it (issue 16)."""

from __future__ import annotations

import inspect
import re

import router.errors


def test_every_exception_router_errors_exports_is_in_its_tree() -> None:
    doc = router.errors.__doc__ or ""
    drawn = set(re.findall(r"[├└]── (?:[\w.]+\.)?(\w+)", doc))
    exported = {
        name
        for name in router.errors.__all__
        if inspect.isclass(obj := getattr(router.errors, name)) and issubclass(obj, Exception)
    }
    assert exported - drawn - {"CallRouterError"} == set()


def test_each_line_of_the_tree_sits_under_its_base() -> None:
    """The indentation says the base: a class drawn under another subclasses it."""
    doc = router.errors.__doc__ or ""
    stack: list[tuple[int, str]] = [(-1, "CallRouterError")]
    for line in doc.splitlines():
        found = re.search(r"[├└]── (?:[\w.]+\.)?(\w+)", line)
        if found is None:
            continue
        depth, name = found.start(), found.group(1)
        while stack[-1][0] >= depth:
            stack.pop()
        obj = getattr(router.errors, name, None)
        if obj is not None:
            base = getattr(router.errors, stack[-1][1])
            assert issubclass(obj, base), f"{name} is drawn under {stack[-1][1]}"
        stack.append((depth, name))
