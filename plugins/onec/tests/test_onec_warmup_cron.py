"""The warm-up's crontab line is classic cron in the rules' zone, through
callrouter's one cron path (issue 11 item 12): weekday 0 and 7 are Sunday,
and "0 8" means 08:00 where the rules' working hours are, not on the host."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_onec_plugin import onec_table

from callrouter_onec.double import OneCDouble
from callrouter_onec.plugin import OneCPlugin
from router import ConfigError, cron_trigger, rules_timezone
from router.testing import StubEngine, config_from_toml

TUESDAY = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("weekday", ["0", "7", "sun"])
async def test_warmup_fires_on_sunday_in_the_rules_zone(
    double: OneCDouble, tmp_path: Path, weekday: str
) -> None:
    config = config_from_toml(
        tmp_path,
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "r"\n'
        'secret = "x"\n[router]\nstate_dir = "state"\n'
        '[plugins.timefuncs]\ntimezone = "Asia/Vladivostok"\n'
        "[plugins.onec]\n" + onec_table(double, f'warmup = "0 8 * * {weekday}"\n'),
    )
    onec = OneCPlugin()
    onec.callrouter_configure(config, config.plugins.for_plugin("onec"))
    engine = StubEngine(tmp_path / "state", config)
    await onec.callrouter_startup(engine)  # type: ignore[arg-type]
    try:
        _, every, cron = engine.jobs["onec:warmup"]
        assert every is None
        assert cron is not None
        # What the engine's schedule() does with a crontab line (router.hookspecs.EngineAPI).
        trigger = cron_trigger(cron, rules_timezone(config))
        # Sunday 08:00 in Vladivostok (UTC+10) is Saturday 22:00 UTC.
        assert trigger.get_next_fire_time(None, TUESDAY).astimezone(UTC) == datetime(
            2026, 12, 5, 22, 0, tzinfo=UTC
        )
    finally:
        await onec.callrouter_shutdown(engine)  # type: ignore[arg-type]


def test_a_bad_warmup_line_is_refused_like_a_bad_schedule(
    double: OneCDouble, tmp_path: Path
) -> None:
    config = config_from_toml(
        tmp_path,
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "r"\n'
        'secret = "x"\n[plugins.onec]\n' + onec_table(double, 'warmup = "0 8 * * 8"\n'),
    )
    with pytest.raises(
        ConfigError,
        match=r"\[plugins.onec\] warmup: not a crontab line "
        r"\(day of week 8 out of range 0-7\)",
    ):
        OneCPlugin().callrouter_configure(config, config.plugins.for_plugin("onec"))
