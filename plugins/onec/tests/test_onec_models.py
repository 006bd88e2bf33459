"""Shape checks: an answer that does not fit the contract never reaches a rule."""

from __future__ import annotations

from typing import Any

import pytest

from callrouter_onec.models import (
    ShapeError,
    parse_error,
    parse_event_ack,
    parse_ping,
    parse_responsible,
)

FOUND: dict[str, Any] = {
    "found": True,
    "phone": "79161234567",
    "client": {"id": "c", "type": "counterparty", "name": "ООО «Ромашка»", "inn": None},
    "contact": None,
    "manager": {"id": "m", "name": "Петров Пётр", "extension": "101", "mobile": None},
    "candidates": 1,
    "extra": "ignored",
}


def test_found_answer() -> None:
    answer = parse_responsible(FOUND)
    assert answer.extension == "101"
    assert answer.as_dict()["client"]["name"] == "ООО «Ромашка»"


def test_optional_fields_may_be_left_out() -> None:
    body = {
        **FOUND,
        "client": {"id": "c", "type": "lead", "name": "x"},
        "manager": {"id": "m", "name": "y", "extension": None},
    }
    answer = parse_responsible(body)
    assert answer.client is not None
    assert answer.client.inn is None


def test_unknown_client_type_is_accepted() -> None:
    assert parse_responsible({**FOUND, "client": {**FOUND["client"], "type": "supplier"}})


@pytest.mark.parametrize(
    "body",
    [
        [],
        "text",
        {**FOUND, "found": "yes"},
        {**FOUND, "phone": 79161234567},
        {**FOUND, "candidates": -1},
        {**FOUND, "candidates": True},
        {**FOUND, "client": None},
        {**FOUND, "client": "ООО"},
        {**FOUND, "manager": {"id": "m", "name": "y"}},
        {**FOUND, "manager": {"id": "m", "name": "y", "extension": 101}},
        {k: v for k, v in FOUND.items() if k != "contact"},
        {**FOUND, "found": False},
        {"result": "error", "message": "Нет данных"},
    ],
)
def test_wrong_shapes(body: object) -> None:
    with pytest.raises(ShapeError):
        parse_responsible(body)


def test_event_ack_and_ping() -> None:
    assert parse_event_ack({"result": "ok", "id": "g", "duplicate": True}).duplicate
    with pytest.raises(ShapeError):
        parse_event_ack({"result": "ok", "id": "g"})
    with pytest.raises(ShapeError):
        parse_event_ack({"result": "error", "id": "g", "duplicate": False})
    assert parse_ping({"result": "ok", "version": "1.0", "time": "t"}).version == "1.0"
    with pytest.raises(ShapeError):
        parse_ping({"result": "ok"})


def test_parse_error() -> None:
    assert parse_error({"error": {"code": "invalid_phone", "message": "m"}}) == (
        "invalid_phone",
        "m",
    )
    assert parse_error({"error": "x"}) is None
    assert parse_error([]) is None
