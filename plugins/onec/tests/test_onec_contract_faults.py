"""The double still answers every fault the shared 1C contract lists.

The project's shared contract ("The 1C side: HTTP service contract", section
"The test double must reproduce") lists: wrong or missing credentials (401 with
the realm header), an unknown path (404 text), a wrong method (405), and as
fault knobs added latency, 500 text, 406 XML, 503 HTML, a BOM before the JSON,
200 with a plain-text error and a connection reset; IBSession mode with cookie
expiry (a stale cookie gets 400 or 500); a record of every request. Its list of
1C's errors adds the proxies' 502 and 504 HTML. test_onec_double.py answers
most of them on the wire; these are the ones it only chose (``select``) or
left to the client's tests, each now asked of the double itself, as a client
meets it. docs/onec.md, "Against the shared contract", says where the contract
differs.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from callrouter_onec.client import basic_auth_header
from callrouter_onec.double import OneCDouble
from callrouter_onec.faults import FAULTS, TEXT_ERROR, parse_faults

#: The shared list's fault knobs, as the double names them.
SHARED_KNOBS = ["latency=0.2", "500", "406", "503", "bom", "text200", "reset"]


def ping(double: OneCDouble, fault: str | None = None, **headers: str) -> httpx.Response:
    sent = {"Authorization": basic_auth_header(double.username, double.password), **headers}
    if fault is not None:
        sent["X-Double-Fault"] = fault
    return httpx.get(double.url + "/v1/ping", headers=sent, timeout=5)


def test_every_knob_of_the_shared_list_is_one_the_double_knows() -> None:
    assert [f.kind for f in parse_faults(", ".join(SHARED_KNOBS))] == [
        "latency",
        "500",
        "406",
        "503",
        "bom",
        "text200",
        "reset",
    ]
    assert {"502", "504"} <= FAULTS.keys()


def test_latency_delays_the_answer_it_does_not_replace(double: OneCDouble) -> None:
    started = time.monotonic()
    response = ping(double, "latency=0.2")
    waited = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["result"] == "ok"
    assert waited >= 0.2  # slept at least that long: a floor, never a ceiling


@pytest.mark.parametrize(
    ("status", "reason"),
    [(502, "Bad Gateway"), (503, "Service Unavailable"), (504, "Gateway Time-out")],
)
def test_a_proxy_error_is_its_html_page(double: OneCDouble, status: int, reason: str) -> None:
    response = ping(double, str(status))
    assert response.status_code == status
    assert response.headers["content-type"] == "text/html"
    assert f"<title>{status} {reason}</title>" in response.text
    assert "<center>nginx</center>" in response.text


def test_text200_is_a_plain_text_error_with_status_200(double: OneCDouble) -> None:
    response = ping(double, "text200")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == TEXT_ERROR
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_reset_breaks_the_connection_without_an_answer(double: OneCDouble) -> None:
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        ping(double, "reset")
    assert double.log[-1].fault == "reset"
    assert ping(double).status_code == 200  # the next request is answered


@pytest.mark.parametrize("stale", [400, 500])
def test_an_expired_ibsession_cookie_gets_400_or_500(stale: int) -> None:
    with OneCDouble(ibsession=True, stale_session_status=stale) as double:
        started = ping(double, IBSession="start")
        cookie = started.headers["set-cookie"].split(";")[0]
        assert ping(double, Cookie=cookie).status_code == 200
        double.expire_sessions()  # sessionMaxAge of idleness, without waiting for it
        refused = ping(double, Cookie=cookie)
        assert refused.status_code == stale
        assert refused.text == "Сеанс не найден или завершён"
        # A new session then works, as MIKO's clients retry with IBSession: start.
        again = ping(double, IBSession="start")
        assert again.status_code == 200
        assert again.headers["set-cookie"].split(";")[0] != cookie
