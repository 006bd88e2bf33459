"""The 1C platform objects the shipped ``CallRouterAPI.bsl`` touches, for
:mod:`tests.unit.bsl_runner`: one set for the unit tests' scripted fakes and the
integration test's real HTTP (``tests/integration/test_bsl_module_live.py``).

``HTTPЗапрос`` (:class:`Request`) and ``HTTPОтвет`` (:class:`Response`) are the same
for both; only ``HTTPСоединение`` differs: a test's script, or :class:`HttpxConnection`,
which sends the request, as written by the module, to a real listener. What the module
gets from the platform (``ТипЗнч``, ``Структура``, ``Формат``, ``КодироватьСтроку``,
``УникальныйИдентификатор``) is here once, so a fake and the real run cannot drift apart.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from bsl_runner import Array, BslException, Map, Module, PlatformEnum, Unsupported
from bsl_tree import SOURCE

#: The largest answer body the real connection reads: a feed answer of 100 events
#: with cards is far below it; more is a fault the test should see, not a hang.
MAX_BODY = 4 * 1024 * 1024


class Request:
    """``HTTPЗапрос``: the address on the server, its headers and its body."""

    def __init__(self, path: str, headers: Map | None = None) -> None:
        self.path = path
        self.Заголовки = headers if headers is not None else Map()
        self.body: str | None = None

    def УстановитьТелоИзСтроки(self, body: str, *_: object) -> None:
        self.body = body


class Response:
    """``HTTPОтвет``: status, headers (names as the server wrote them), body."""

    def __init__(self, status: int, headers: dict[str, str], body: str) -> None:
        self.КодСостояния = status
        self.Заголовки = Map(headers)
        self._body = body

    def ПолучитьТелоКакСтроку(self, _encoding: object = None) -> str:
        return self._body


class Structure(Map):
    """``Структура``: a :class:`Map` whose keys are also properties (``Р.Курсор``)."""

    def __init__(self, keys: str = "", *values: Any) -> None:
        names = [k.strip() for k in keys.split(",") if k.strip()]
        if len(values) > len(names):
            raise BslException("Структура: значений больше, чем ключей")
        super().__init__({n: (values[i] if i < len(values) else None) for i, n in enumerate(names)})

    @property  # 1C's Структура has no Получить: the module must not call it on one
    def Получить(self) -> Any:  # type: ignore[override]
        raise AttributeError("Получить")

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self:
            raise BslException(f"Поле объекта не обнаружено ({name})")
        self[name] = value


class UniqueId:
    """``Новый УникальныйИдентификатор``: a new UUID, its text in ``Строка``."""

    def __init__(self, text: str | None = None) -> None:
        self.value = uuid.UUID(text) if text else uuid.uuid4()

    def __str__(self) -> str:
        return str(self.value)


class Constant:
    """``Константы.Имя``: its value, and every value written, in order."""

    def __init__(self, value: str = "") -> None:
        self.value = value
        self.writes: list[str] = []

    def Получить(self) -> str:
        return self.value

    def Установить(self, value: str) -> None:
        self.value = value
        self.writes.append(value)


def from_json(text: str) -> Any:
    """``ПрочитатьJSON(Чтение, Истина)``: objects as ``Соответствие``, arrays as ``Массив``,
    ``null`` as ``Неопределено``; not JSON is the platform's exception."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return Map({k: convert(v) for k, v in value.items()})
        if isinstance(value, list):
            return Array(convert(v) for v in value)
        return value

    try:
        return convert(json.loads(text))
    except ValueError as exc:
        raise BslException(f"Ошибка чтения JSON: {exc}") from None


def type_name(value: object) -> str:
    """``ТипЗнч``: compared with ``Тип("...")``, which is the name itself here."""
    names = {Structure: "Структура", Map: "Соответствие", Array: "Массив", str: "Строка"}
    if value is None:
        return "Неопределено"
    if isinstance(value, bool):
        return "Булево"
    if isinstance(value, int | float):
        return "Число"
    return names.get(type(value), type(value).__name__)


def format_number(value: Any, spec: str) -> str:
    """``Формат`` with the one format the module uses: ``ЧН=0; ЧГ=`` (zero as ``0``,
    no group separators), so a cursor or a timeout goes as plain digits."""
    if spec.replace(" ", "") != "ЧН=0;ЧГ=":
        raise Unsupported(f"Формат with {spec!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unsupported(f"Формат of {value!r}")
    return str(int(value)) if float(value).is_integer() else repr(value)


def encode_url(text: Any, _way: object = None) -> str:
    """``КодироватьСтроку(..., СпособКодированияСтроки.КодировкаURL)``: every byte but
    letters, digits and ``-_.~`` as ``%XX`` of its UTF-8."""
    return quote(str(text), safe="")


def uri_parts(address: str) -> Structure:
    """BSP's ``ОбщегоНазначенияКлиентСервер.СтруктураURI``: scheme, host, port (a string,
    empty when not written) and the path on the server without its leading ``/``."""
    parts = urlsplit(address)
    return Structure(
        "Схема, Хост, Порт, ПутьНаСервере",
        parts.scheme,
        parts.hostname or "",
        "" if parts.port is None else str(parts.port),
        parts.path.lstrip("/"),
    )


@dataclass
class HttpxConnection:
    """``HTTPСоединение`` backed by httpx: the module's request goes to a real listener.

    ``Новый HTTPСоединение(Сервер, Порт, , , , Таймаут, ЗащищенноеСоединение)``; a
    connection that fails or times out is the platform's exception, as 1C raises it.
    ``sent`` keeps (method, path, status) of each request, for the test's asserts."""

    host: str
    port: int
    user: Any = None
    password: Any = None
    proxy: Any = None
    timeout: float = 10
    secure: Any = None
    sent: list[tuple[str, str, int]] = field(default_factory=list)

    def ВызватьHTTPМетод(self, method: str, request: Request) -> Response:
        scheme = "https" if self.secure is not None else "http"
        url = f"{scheme}://{self.host}:{int(self.port)}{request.path}"
        headers = {str(k): str(v) for k, v in request.Заголовки.items()}
        content = None if request.body is None else request.body.encode("utf-8")
        try:
            with (
                httpx.Client(timeout=float(self.timeout)) as client,
                client.stream(method, url, headers=headers, content=content) as answer,
            ):
                body = b""
                for chunk in answer.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise BslException(f"{method} {request.path}: answer over {MAX_BODY} bytes")
        except httpx.TimeoutException as exc:
            raise BslException(f"Ошибка работы с Интернет: Timeout was reached ({exc})") from None
        except httpx.TransportError as exc:
            raise BslException(f"Ошибка работы с Интернет: {exc}") from None
        self.sent.append((method, request.path, answer.status_code))
        # The names as the server wrote them (1C keeps them so; ПаузаRetryAfter must
        # read "retry-after" in any case), not httpx's lower-cased view.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in answer.headers.raw}
        return Response(answer.status_code, headers, body.decode("utf-8", "replace"))


def module(
    connection: Callable[..., Any],
    *,
    pauses: list[float] | None = None,
    settings: Any = None,
    address: str = "",
    token: str = "",
    cursor: Constant | None = None,
    clock: Callable[[], int] = lambda: 0,
) -> Module:
    """The shipped module ready to run its HTTP functions and its feed job:
    ``Новый HTTPСоединение`` is ``connection(...)`` with the module's arguments,
    ``Пауза`` appends to ``pauses``.

    ``settings`` replaces ``НастройкиПодключения`` (server, port, path, token); without
    it that function runs as written, on the constant ``address`` and the stored
    ``token`` (BSP's storage and ``СтруктураURI`` faked here). ``cursor`` is the feed
    job's cursor constant; ``clock`` its ``ТекущаяУниверсальнаяДатаВМиллисекундах``
    (0 by default: a run that never times out)."""
    run = Module(
        SOURCE,
        {
            "ТипЗнч": type_name,
            "Тип": lambda name: name,
            "Формат": format_number,
            "КодироватьСтроку": encode_url,
            "СтрНачинаетсяС": lambda text, start: str(text).startswith(str(start)),
            "СтрЗаканчиваетсяНа": lambda text, end: str(text).endswith(str(end)),
            "УстановитьПривилегированныйРежим": lambda _on: None,
            "ТекущаяУниверсальнаяДатаВМиллисекундах": clock,
            "ЗаписьЖурналаРегистрации": lambda *_: None,
        },
    )
    run.globals["СпособКодированияСтроки"] = PlatformEnum("СпособКодированияСтроки")
    run.globals["УровеньЖурналаРегистрации"] = PlatformEnum("УровеньЖурналаРегистрации")
    run.globals["Константы"] = SimpleNamespace(
        ТелефонияАдресCallRouter=Constant(address),
        ТелефонияКурсорСобытийCallRouter=cursor if cursor is not None else Constant(),
    )
    run.globals["Метаданные"] = SimpleNamespace(
        Константы=SimpleNamespace(ТелефонияАдресCallRouter="Константа.ТелефонияАдресCallRouter"),
        РегламентныеЗадания=SimpleNamespace(ТелефонияСобытияCallRouter="job"),
    )
    run.globals["ОбщегоНазначения"] = SimpleNamespace(
        ИдентификаторОбъектаМетаданных=lambda metadata: metadata,
        ПриНачалеВыполненияРегламентногоЗадания=lambda _job: None,
        ПрочитатьДанныеИзБезопасногоХранилища=lambda owner, key: (
            token if key == "ТокенAPI" else None
        ),
    )
    run.globals["ОбщегоНазначенияКлиентСервер"] = SimpleNamespace(СтруктураURI=uri_parts)
    run.overrides.update(
        {
            "Пауза": (pauses if pauses is not None else []).append,
            "ВJSON": lambda data: json.dumps(data, ensure_ascii=False),
            "ИзJSON": from_json,
        }
    )
    if settings is not None:
        run.overrides["НастройкиПодключения"] = lambda: settings
    run.constructor("HTTPЗапрос", Request)
    run.constructor("HTTPСоединение", connection)
    run.constructor("Структура", Structure)
    run.constructor("УникальныйИдентификатор", UniqueId)
    return run
