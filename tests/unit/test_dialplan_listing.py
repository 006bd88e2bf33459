"""The listing's background questions stay bounded (router/dialplan_listing.py).

A 1C answering a new, missing extension for every call must neither flood
Asterisk with ShowDialPlan nor grow the listing without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from router.dialplan_audit import ListedContext
from router.dialplan_listing import MAX_FOUND, MAX_IN_FLIGHT, DialplanListing

DIAL = ListedContext(frozenset({"100"}), (), closed=True)


async def test_questions_in_flight_are_bounded() -> None:
    asked: list[tuple[str, str]] = []
    release = asyncio.Event()
    all_asking = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def ask(context: str, exten: str) -> bool | None:
        asked.append((context, exten))
        if len(asked) == MAX_IN_FLIGHT:
            all_asking.set()
        await release.wait()
        return False

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        tasks.append(asyncio.ensure_future(coro))

    listing = DialplanListing({"dial": DIAL}, ask=ask, spawn=spawn)
    assert all(listing["dial"].lacks(f"x{n}") for n in range(MAX_IN_FLIGHT * 3))
    # Only a spawned question asks: the MAX_IN_FLIGHT spawned are all in ask()
    # (waited for, not slept past RECHECK_DELAY), and no more were spawned.
    await asyncio.wait_for(all_asking.wait(), 5)
    assert len(tasks) == MAX_IN_FLIGHT
    assert len(asked) == MAX_IN_FLIGHT
    release.set()
    await asyncio.gather(*tasks)
    assert listing["dial"].lacks("another")  # room again: asked
    assert len(tasks) == MAX_IN_FLIGHT + 1
    await asyncio.gather(*tasks)
    assert asked[MAX_IN_FLIGHT:] == [("dial", "another")]


async def test_extensions_learnt_present_are_bounded() -> None:
    listing = DialplanListing({"dial": DIAL})
    for n in range(MAX_FOUND + 10):
        listing.confirmed("dial", f"x{n}")
    present = sum(not listing.read["dial"].lacks(f"x{n}") for n in range(MAX_FOUND + 10))
    assert present == MAX_FOUND


async def test_an_answer_that_says_present_ends_the_rejection() -> None:
    async def ask(context: str, exten: str) -> bool | None:
        return True

    tasks: list[asyncio.Task[None]] = []
    listing = DialplanListing(
        {"dial": DIAL}, ask=ask, spawn=lambda c: tasks.append(asyncio.ensure_future(c))
    )
    assert listing["dial"].lacks("Ivanov")
    await asyncio.gather(*tasks)
    assert not listing["dial"].lacks("Ivanov")
    assert not listing.read["dial"].lacks("Ivanov")
    assert listing["dial"].lacks("Petrov")  # only the one Asterisk has


async def test_no_answer_changes_nothing() -> None:
    async def ask(context: str, exten: str) -> bool | None:
        return None

    tasks: list[asyncio.Task[None]] = []
    listing = DialplanListing(
        {"dial": DIAL}, ask=ask, spawn=lambda c: tasks.append(asyncio.ensure_future(c))
    )
    assert listing["dial"].lacks("Ivanov")
    await asyncio.gather(*tasks)
    assert listing["dial"].lacks("Ivanov")
