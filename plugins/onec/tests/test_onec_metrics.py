"""The 1C plugin's metrics through ``callrouter_metrics``: breaker state, stale
answers, the history queue's depth and oldest event (callrouter_onec/metrics.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from callrouter_onec.double import DEFAULT_USER, OneCDouble
from callrouter_onec.errors import OneCUnavailable
from callrouter_onec.history import HistoryQueue
from callrouter_onec.plugin import OneCPlugin
from router import Metrics
from router.testing import StubEngine, config_from_toml

PASSWORD = "пароль-secret"  # the double's (conftest.py)


def values(metrics: Metrics, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
        if s.name == metric
    }


def breaker(metrics: Metrics) -> dict[str, float]:
    found = values(metrics, "callrouter_onec_breaker_state")
    return {dict(labels)["state"]: value for labels, value in found.items()}


@pytest.fixture
async def started(
    double: OneCDouble, tmp_path: Path
) -> AsyncIterator[tuple[OneCPlugin, StubEngine, Metrics]]:
    onec = OneCPlugin()
    metrics = Metrics(event_names=())
    config = config_from_toml(
        tmp_path,
        '[router]\nstate_dir = "state"\n[plugins.onec]\n'
        f'url = "{double.url}"\nusername = "{DEFAULT_USER}"\npassword = "{PASSWORD}"\n'
        "connect_timeout = 0.2\ntimeout = 0.5\nevent_timeout = 0.5\nping_interval = 0\n"
        "failure_threshold = 2\n",
    )
    onec.callrouter_configure(config, config.plugins.for_plugin("onec"))
    onec.callrouter_metrics(metrics)
    engine = StubEngine(tmp_path / "state")
    await onec.callrouter_startup(engine)  # type: ignore[arg-type]
    yield onec, engine, metrics
    await onec.callrouter_shutdown(engine)  # type: ignore[arg-type]


def test_the_families_exist_before_startup_and_without_a_table() -> None:
    metrics = Metrics(event_names=())
    OneCPlugin().callrouter_metrics(metrics)
    assert breaker(metrics) == {"closed": 0.0, "open": 0.0, "half-open": 0.0}  # no cache yet
    assert values(metrics, "callrouter_onec_stale_answers_total") == {(): 0.0}
    assert values(metrics, "callrouter_queue_depth") == {(("queue", "onec_history"),): 0.0}


async def test_breaker_state_follows_1c(
    started: tuple[OneCPlugin, StubEngine, Metrics], double: OneCDouble
) -> None:
    onec, _, metrics = started
    assert breaker(metrics) == {"closed": 1.0, "open": 0.0, "half-open": 0.0}
    double.down = True
    for number in ("74957770101", "74957770102"):
        with pytest.raises(OneCUnavailable):
            await onec.responsible(number)
    assert breaker(metrics) == {"closed": 0.0, "open": 1.0, "half-open": 0.0}


async def test_breaker_openings_are_counted_and_open_stays_open_without_a_probe(
    started: tuple[OneCPlugin, StubEngine, Metrics], double: OneCDouble
) -> None:
    """A 30 s opening between two one-minute polls still shows (the counter),
    and past ``open_seconds`` with no probe sent the gauge says open, not
    half-open (it did, with 1C still down)."""
    onec, _, metrics = started
    assert onec.cache is not None
    opened = "callrouter_onec_breaker_opened_total"
    assert values(metrics, opened) == {(): 0.0}
    double.down = True
    for number in ("74957770101", "74957770102"):
        with pytest.raises(OneCUnavailable):
            await onec.responsible(number)
    assert values(metrics, opened) == {(): 1.0}
    with pytest.raises(OneCUnavailable, match="circuit open"):
        await onec.responsible("74957770103")
    assert values(metrics, opened) == {(): 1.0}  # refused while open: no new opening
    onec.cache.breaker.open_seconds = 0.0  # open_seconds have passed
    assert breaker(metrics) == {"closed": 0.0, "open": 1.0, "half-open": 0.0}
    with pytest.raises(OneCUnavailable):
        await onec.responsible("74957770104")  # the probe fails
    assert values(metrics, opened) == {(): 2.0}
    double.down = False
    assert await onec.responsible("74957770105") is not None  # the probe succeeds
    assert breaker(metrics) == {"closed": 1.0, "open": 0.0, "half-open": 0.0}
    assert values(metrics, opened) == {(): 2.0}


async def test_stale_answers_are_counted(
    started: tuple[OneCPlugin, StubEngine, Metrics], double: OneCDouble
) -> None:
    onec, _, metrics = started
    assert onec.cache is not None
    onec.cache.positive_ttl = 0.0  # every answer is stale at once (within stale_ttl)
    assert await onec.responsible("79161234567") is not None
    assert values(metrics, "callrouter_onec_stale_answers_total") == {(): 0.0}  # from 1C
    double.down = True
    await asyncio.sleep(0.01)
    assert await onec.responsible("79161234567") is not None  # stale, served at once
    assert values(metrics, "callrouter_onec_stale_answers_total") == {(): 1.0}


def depth(metrics: Metrics) -> float:
    return values(metrics, "callrouter_queue_depth")[(("queue", "onec_history"),)]


def age(metrics: Metrics) -> float:
    return values(metrics, "callrouter_queue_oldest_seconds")[(("queue", "onec_history"),)]


async def test_history_queue_depth_is_read_at_scrape(
    started: tuple[OneCPlugin, StubEngine, Metrics],
) -> None:
    """Each event queued, delivered or dropped shows at the next scrape, with no
    timed job run between: the depth came from a reading of the file every
    15 s, so a scrape right after an outage ended showed the queue as it was."""
    onec, _, metrics = started
    assert onec.queue is not None
    assert onec.sender is not None
    await onec.sender.stop()  # 1C is not asked: the events stay queued
    created = time.time()
    for event in ("ringing", "answered"):
        onec.queue.enqueue({"call_id": "1.1", "event": event, "event_id": f"1.1/{event}"})
    first, second = onec.queue.pending()
    assert depth(metrics) == 2.0
    assert 0.0 <= age(metrics) <= time.time() - created
    onec.queue.mark_sent(first.id, "ack-1")
    assert depth(metrics) == 1.0
    assert onec.queue.depth() == (1, second.created)  # the oldest is the one left
    onec.queue.mark_dropped(second.id, "refused")
    assert (depth(metrics), age(metrics)) == (0.0, 0.0)
    onec.queue.enqueue({"call_id": "1.1", "event": "ringing", "event_id": "1.1/ringing"})
    assert depth(metrics) == 0.0  # a repeat is not queued again


async def test_history_drained_after_an_outage_shows_at_once(
    started: tuple[OneCPlugin, StubEngine, Metrics], double: OneCDouble
) -> None:
    onec, engine, metrics = started
    assert onec.sender is not None
    double.down = True
    for event in ("ringing", "answered", "hangup"):
        onec.sender.submit({"call_id": "2.1", "event": event, "event_id": f"2.1/{event}"})
    await onec.sender.flush()
    assert depth(metrics) == 3.0
    double.down = False
    onec.sender.retry_now()
    assert await onec.sender.drain(10)
    assert (depth(metrics), age(metrics)) == (0.0, 0.0)
    assert "onec:metrics" in engine.jobs  # never run here


async def test_the_timed_job_counts_what_another_process_queued(
    started: tuple[OneCPlugin, StubEngine, Metrics], tmp_path: Path
) -> None:
    """``callrouter history replay`` writes the same file from its own process:
    the job counts the file again every 15 s, off the event loop."""
    onec, engine, metrics = started
    assert onec.queue is not None
    assert onec.sender is not None
    job = engine.jobs["onec:metrics"]
    assert job.every == 15.0
    await onec.sender.stop()  # 1C is not asked: the events stay queued
    created = time.time()
    with HistoryQueue(onec.queue.path) as other:
        for event in ("ringing", "answered"):
            other.enqueue({"call_id": "1.1", "event": event, "event_id": f"1.1/{event}"})
    assert depth(metrics) == 0.0  # not this process's: not known before the job
    await job.run()
    assert depth(metrics) == 2.0
    assert 0.0 <= age(metrics) <= time.time() - created
