"""The office soak's workers (``bench/soak_office.py``) fail only for what they test.

Its click-to-call scenario hung up the PSTN side's last three calls when it
ended, and with four workers those were often another worker's calls to a DID:
a transfer whose caller it hung up found no call up on 105 ("105: waited 10 s
of 10 s for a call to be up"), 51 of 723 transfers in a 140-minute soak, 2 of 54
in 12 minutes, all counted as failed transfers though callrouter did nothing wrong.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit.bench_script import load_bench_script

SOAK_OFFICE = load_bench_script("soak_office.py", "soak_office_under_test")


class FakeCall:
    def __init__(self, call_id: str, direction: str) -> None:
        self.id = call_id
        self.direction = direction
        self.remote = "x"
        self.started_at = time.time()
        self.answered_at: float | None = self.started_at
        self.ended_at: float | None = None
        self.reason: str | None = None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def hangup(self) -> None:
        self.ended_at = time.time()
        self.reason = "Connection reset by user"


class FakePhone:
    def __init__(self) -> None:
        self.calls: list[FakeCall] = []


class FakePhones:
    def __init__(self) -> None:
        self.pstn = FakePhone()
        self._phones = {"101": FakePhone()}

    def __getitem__(self, name: str) -> FakePhone:
        return self._phones[name]


class FakeApi:
    """Places the click-to-call as Asterisk does: 101 rings, then the customer."""

    def __init__(self, phones: FakePhones) -> None:
        self.phones = phones

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        assert (method, path) == ("POST", "/api/v1/calls")
        self.phones["101"].calls.append(FakeCall("manager", "in"))
        self.phones.pstn.calls.append(FakeCall("customer", "in"))
        return 201, {"id": "c2c-1"}


def test_click_to_call_hangs_up_its_own_calls_not_another_worker_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    office = SOAK_OFFICE.Office(tmp_path, 1.5)
    phones = FakePhones()
    office.phones = phones
    office.api = FakeApi(phones)
    # Another worker's transfer: the caller's call to the DID, up on 105.
    theirs = FakeCall("transfer-caller", "out")
    theirs.started_at -= 1
    phones.pstn.calls.append(theirs)
    monkeypatch.setattr(SOAK_OFFICE.time, "sleep", lambda seconds: None)

    office.scenario("click", worker=2)

    mine = [c for c in [*phones["101"].calls, *phones.pstn.calls] if c is not theirs]
    assert all(c.ended for c in mine)
    assert not theirs.ended, "the click-to-call hung up another worker's call"
    assert "transfer-caller" not in office.click_hangups


def _facts(**overrides: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "pstn_call": {"answered": 0.01, "ended": None, "reason": None},
        "hung_up_by_click": None,
        "phone_105": [{"direction": "in", "answered": 0.05, "ended": None, "reason": None}],
    }
    facts.update(overrides)
    return facts


@pytest.mark.parametrize(
    ("kind", "facts", "verdict"),
    [
        ("transfer", _facts(hung_up_by_click={"worker": 2, "at": 0.5}), "soak"),
        (
            "api_transfer",
            _facts(
                pstn_call={"answered": 0.01, "ended": 0.4, "reason": "bye"},
                http={"status": 409, "sent": 0.6},
            ),
            "expected",
        ),
        ("api_transfer", _facts(http={"status": 409, "sent": 0.6}), "router"),
        ("api_transfer", _facts(http={"status": 500, "sent": 0.6}), "router"),
        ("api_transfer", _facts(http={"status": 0, "sent": 0.6}), "router"),
        ("transfer", {}, "unknown"),
    ],
)
def test_a_failed_scenario_is_classified(kind: str, facts: dict[str, Any], verdict: str) -> None:
    assert SOAK_OFFICE.classify(kind, facts)[0] == verdict


def test_an_expected_outcome_is_counted_apart_from_the_failures(tmp_path: Path) -> None:
    office = SOAK_OFFICE.Office(tmp_path, 1.5)
    ended = _facts(
        pstn_call={"answered": 0.01, "ended": 0.4, "reason": "bye"},
        http={"status": 409, "sent": 0.6},
    )
    office.record_failure(1, "api_transfer", SOAK_OFFICE.ScenarioFailed("409", ended))
    office.record_failure(
        1,
        "api_transfer",
        SOAK_OFFICE.ScenarioFailed("500", _facts(http={"status": 500, "sent": 1})),
    )

    assert office.failed == {"api_transfer": 1}
    assert office.failed_by_class == {"api_transfer:router": 1}
    assert list(office.expected) == [
        "api_transfer: 409: the caller hung up before the transfer was asked"
    ]
    assert len((tmp_path / "failures.jsonl").read_text().splitlines()) == 2


class FakeOffice:
    """The soak's :class:`Office` without Asterisk or phones: its run ends as
    :attr:`ending` says (samples, or an exception), after failures if asked."""

    ending: BaseException | None = None
    failures = False

    def __init__(self, folder: Path, rate: float) -> None:
        self.folder = folder

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def run(self, minutes: float, workers: int) -> list[dict[str, Any]]:
        if self.failures:
            (self.folder / "failures.jsonl").write_text("{}\n", encoding="utf-8")
        if self.ending is not None:
            raise self.ending
        sample: dict[str, Any] = dict.fromkeys(
            (
                "rss_kb",
                "fds",
                "threads",
                "asyncio_tasks",
                "calls_active",
                "queue_depth",
                "log_lines",
                "placed",
                "onec_receipts",
                "feed_events",
            ),
            0,
        )
        return [{**sample, "state_files": {}}]

    def verdict(self) -> dict[str, Any]:
        return {"failed": {}}


def soak_in(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *argv: str,
    ending: BaseException | None = None,
    failures: bool = False,
) -> None:
    """``soak_office.py ARGV`` over a :class:`FakeOffice`, its temporary folder in ``tmp_path``."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(SOAK_OFFICE.signal, "signal", lambda *_: None)  # pytest's stay
    monkeypatch.setattr(FakeOffice, "ending", ending)
    monkeypatch.setattr(FakeOffice, "failures", failures)
    monkeypatch.setattr(SOAK_OFFICE, "Office", FakeOffice)
    monkeypatch.setattr("sys.argv", ["soak_office.py", *argv])
    if ending is None:
        assert SOAK_OFFICE.main() == 0
    else:
        with pytest.raises(type(ending)):
            SOAK_OFFICE.main()


@pytest.mark.parametrize("ending", [None, KeyboardInterrupt(), RuntimeError("no sandbox")])
def test_the_temporary_folder_is_removed_when_the_soak_ends(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    ending: BaseException | None,
) -> None:
    """Each soak without ``--out`` left a ``soak-office-*`` folder in /tmp (issue 16);
    finished, interrupted (Ctrl-C, SIGTERM) or failed, it goes, and says so."""
    soak_in(tmp_path, monkeypatch, ending=ending)
    assert list(tmp_path.iterdir()) == []
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(f"soak: removed {tmp_path}/soak-office-")


def test_the_temporary_folder_is_kept_with_keep_or_failures_and_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "kept").mkdir()
    soak_in(tmp_path / "kept", monkeypatch, "--keep")
    (folder,) = (tmp_path / "kept").iterdir()
    assert (folder / "soak.md").exists()
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == f"soak: kept {folder} (--keep); remove it when read"

    (tmp_path / "failed").mkdir()
    soak_in(tmp_path / "failed", monkeypatch, failures=True)
    (folder,) = (tmp_path / "failed").iterdir()
    assert (folder / "failures.jsonl").exists()
    assert "(failures.jsonl: scenarios failed)" in capsys.readouterr().out.splitlines()[-1]


def test_the_out_folder_is_the_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    soak_in(tmp_path, monkeypatch, "--out", str(out))
    assert sorted(p.name for p in out.iterdir()) == ["samples.json", "soak.md"]
    assert "soak: " not in capsys.readouterr().out
