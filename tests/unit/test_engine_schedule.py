"""The engine schedules ``schedule:`` rules as check validated them: classic cron
weekdays in the rules' zone ([plugins.timefuncs] timezone), never the host's."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from router.config import load_config
from router.engine import Engine, EngineOptions
from router.plugins import Plugins
from tests.unit.test_engine_unit import FakeClient

RULES = """version: 1
rules:
  - name: sunday-report
    schedule: "0 9 * * 0"
    do:
      - ami: {action: Ping}
  - name: sunday-too
    schedule: "30 9 * * 7"
    do:
      - ami: {action: Ping}
"""


async def test_schedules_fire_on_sunday_in_the_rules_zone(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
        f'[router]\nrules = ["{tmp_path / "rules.yaml"}"]\n'
        '[plugins.timefuncs]\ntimezone = "Asia/Vladivostok"\n'
    )
    engine = Engine(
        load_config(tmp_path / "router.toml"),
        client=FakeClient(),  # type: ignore[arg-type]
        plugins=Plugins.load(entry_points=False),
        options=EngineOptions(watch_interval=0),
    )
    await engine.start()
    try:
        tuesday = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
        fire = {}
        for name in ("sunday-report", "sunday-too"):
            job = engine.scheduler.get_job(f"rule:{name}")
            assert job is not None, f"{name} was not scheduled"
            fire[name] = job.trigger.get_next_fire_time(None, tuesday).astimezone(UTC)
        # 09:00 and 09:30 on Sunday in Vladivostok (UTC+10) are 23:00 and
        # 23:30 UTC on Saturday.
        assert fire == {
            "sunday-report": datetime(2026, 12, 5, 23, 0, tzinfo=UTC),
            "sunday-too": datetime(2026, 12, 5, 23, 30, tzinfo=UTC),
        }
    finally:
        await engine.stop()
