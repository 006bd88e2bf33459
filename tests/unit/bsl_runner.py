"""A small BSL interpreter for the shipped modules' own logic, on tree-sitter-hbk's tree.

No 1C platform runs here. The parse tests (:mod:`tests.unit.test_bsl_parse`) prove
a module is BSL; this runs a few of its functions, as written, against fakes of the
platform objects they touch (an ``HTTPСоединение`` that answers from a script, a
``Пауза`` that only records its seconds), so a test sees what the code does, not
only what it contains. It knows the statements and expressions those functions use
and refuses anything else (:class:`Unsupported`), so an untaught construct fails the
test rather than being skipped.

Values: numbers are Python ``int``/``float`` (``Decimal`` is not needed by the
code run), strings ``str``, ``Неопределено``/``Null`` ``None``, ``Соответствие`` a
:class:`Map`, ``Массив`` a :class:`Array`. ``И``/``Или`` short-circuit as in 1C.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import tree_sitter_hbk
from tree_sitter import Node, Parser

_PARSER = Parser(tree_sitter_hbk.Language())
#: Passes a Пока loop may make: a test's fakes end theirs far sooner.
MAX_PASSES = 10_000


class Unsupported(Exception):
    """A construct this interpreter was not taught: the test must not pass by it."""


class BslException(Exception):
    """``ВызватьИсключение``, or a platform failure a fake raised (a dropped connection)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Return(Exception):
    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value


@dataclass
class KeyValue:
    Ключ: Any
    Значение: Any


class Map(dict[Any, Any]):
    """``Соответствие``."""

    def Вставить(self, key: Any, value: Any = None) -> None:
        self[key] = value

    def Получить(self, key: Any) -> Any:
        return self.get(key)

    def Количество(self) -> int:
        return len(self)

    def __iter__(self) -> Iterator[Any]:  # Для Каждого gives КлючИЗначение
        return iter([KeyValue(k, v) for k, v in self.items()])


class Array(list[Any]):
    """``Массив``."""

    def Добавить(self, value: Any) -> None:
        self.append(value)

    def Количество(self) -> int:
        return len(self)


class PlatformEnum:
    """``КодировкаТекста``, ``ИспользованиеByteOrderMark``: any value, by its name."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, value: str) -> str:
        return f"{self._name}.{value}"


def _text(node: Node) -> str:
    return (node.text or b"").decode("utf-8")


def _string(node: Node) -> str:
    """A string literal's value: its lines (``|`` continues one), ``""`` one quote."""
    parts = [_text(c) for c in node.children if c.type == "string_content"]
    return "\n".join(parts).replace('""', '"')


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _same(a: Any, b: Any) -> bool:
    """BSL's ``=``: values of different types are never equal (``1 = "1"`` is Ложь)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _platform_number(value: Any) -> int | float:
    text = str(value).strip()
    try:
        return _number(text)
    except ValueError:
        raise BslException(
            f"Преобразование значения к типу Число не может быть выполнено: {text!r}"
        ) from None


class Module:
    """One BSL module: its functions and procedures, run by name."""

    def __init__(self, source: bytes, builtins: dict[str, Callable[..., Any]]) -> None:
        self.tree = _PARSER.parse(source)
        self.methods: dict[str, Node] = {}
        stack = [self.tree.root_node]  # inside #Область too
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.type in ("function_definition", "procedure_definition"):
                name = node.child_by_field_name("name")
                assert name is not None
                self.methods[_text(name)] = node
        #: Module methods replaced by the test (НастройкиПодключения, Пауза...).
        self.overrides: dict[str, Callable[..., Any]] = {}
        self.globals: dict[str, Any] = {
            "КодировкаТекста": PlatformEnum("КодировкаТекста"),
            "ИспользованиеByteOrderMark": PlatformEnum("ИспользованиеByteOrderMark"),
        }
        self._error: BslException | None = None
        self.builtins: dict[str, Callable[..., Any]] = {
            "СтрШаблон": self._template,
            "Лев": lambda s, n: str(s)[: int(n)],
            "Сред": lambda s, start, n=None: str(s)[int(start) - 1 :][
                : None if n is None else int(n)
            ],
            "СтрДлина": lambda s: len(str(s)),
            "СтрНайти": lambda s, sub: str(s).find(str(sub)) + 1,
            "СокрЛП": lambda s: str(s).strip(),
            "НРег": lambda s: str(s).lower(),
            "ПустаяСтрока": lambda s: str(s).strip() == "",
            "Строка": lambda v: "" if v is None else str(v),
            "Число": _platform_number,
            "ЗначениеЗаполнено": lambda v: v not in (None, "", 0, False) and v != [] and v != {},
            "СтрСоединить": lambda items, sep="": str(sep).join(str(i) for i in items),
            "ИнформацияОбОшибке": lambda: self._error,
            "КраткоеПредставлениеОшибки": lambda info: "" if info is None else info.text,
            **builtins,
        }
        self.constructors: dict[str, Callable[..., Any]] = {"Соответствие": Map, "Массив": Array}

    def constructor(self, name: str, make: Callable[..., Any]) -> None:
        self.constructors[name] = make

    @staticmethod
    def _template(text: str, *values: Any) -> str:
        out = str(text)
        for n in range(len(values), 0, -1):  # %10 before %1
            out = out.replace(f"%{n}", "" if values[n - 1] is None else str(values[n - 1]))
        return out

    # -- running ------------------------------------------------------------------------

    def call(self, name: str, *args: Any) -> Any:
        if name in self.overrides:
            return self.overrides[name](*args)
        node = self.methods.get(name)
        if node is None:
            if name in self.builtins:
                return self.builtins[name](*args)
            raise Unsupported(f"no method or built-in {name!r}")
        env: dict[str, Any] = {}
        parameters = node.child_by_field_name("parameters")
        params = [c for c in parameters.children if c.type == "parameter"] if parameters else []
        if len(args) > len(params):
            raise BslException(f"{name}: слишком много фактических параметров")
        for index, param in enumerate(params):
            ident = next(c for c in param.children if c.type == "identifier")
            if index < len(args) and args[index] is not _OMITTED:
                env[_text(ident)] = args[index]
                continue
            default = [
                c
                for c in param.children
                if c.is_named and c.type not in ("identifier", "VAL_KEYWORD")
            ]
            if not default:
                raise BslException(f"{name}: недостаточно фактических параметров")
            env[_text(ident)] = self._const(default[0])
        try:
            self._block(_statements(node), env)
        except _Return as returned:
            return returned.value
        return None

    def _block(self, statements: list[Node], env: dict[str, Any]) -> None:
        for statement in statements:
            self._statement(statement, env)

    def _statement(self, node: Node, env: dict[str, Any]) -> None:
        kind = node.type
        if kind == "assignment_statement":
            target, value = node.named_children[0], node.named_children[-1]
            if target.type == "property_access" and len(target.named_children) == 2:
                # Структура.Поле = ...: the object's own check says whether it has the field.
                owner = self.eval(target.named_children[0], env)
                setattr(owner, _text(target.named_children[-1]), self.eval(value, env))
            elif target.type != "identifier":
                raise Unsupported(f"assignment to {target.type}: {_text(node)}")
            else:
                env[_text(target)] = self.eval(value, env)
        elif kind == "call_statement":
            self.eval(node.named_children[0], env)
        elif kind == "return_statement":
            values = [c for c in node.named_children if c.type == "expression"]
            raise _Return(self.eval(values[0], env) if values else None)
        elif kind == "if_statement":
            self._if(node, env)
        elif kind == "for_statement":
            self._for(node, env)
        elif kind == "for_each_statement":
            ident = next(c for c in node.named_children if c.type == "identifier")
            source = next(c for c in node.named_children if c.type == "expression")
            for item in list(self.eval(source, env)):
                env[_text(ident)] = item
                if not self._loop_pass(node, env):
                    break
        elif kind == "while_statement":
            condition = next(c for c in node.named_children if c.type == "expression")
            for _ in range(MAX_PASSES):
                if not self._truth(self.eval(condition, env)) or not self._loop_pass(node, env):
                    break
            else:
                raise Unsupported(f"a Пока loop ran {MAX_PASSES} passes: is it endless?")
        elif kind == "try_statement":
            body, handler = _split(node, "EXCEPT_KEYWORD")
            try:
                self._block(body, env)
            except BslException as exc:
                self._error = exc
                self._block(handler, env)
        elif kind == "rise_error_statement":
            values = [c for c in node.named_children if c.type == "expression"]
            if not values:
                raise self._error or BslException("")
            raise BslException(str(self.eval(values[0], env)))
        elif kind == "continue_statement":
            raise _Continue
        elif kind == "break_statement":
            raise _Break
        else:
            raise Unsupported(f"statement {kind}: {_text(node)[:60]}")

    def _if(self, node: Node, env: dict[str, Any]) -> None:
        branches: list[tuple[Node | None, list[Node]]] = []
        condition = next(c for c in node.named_children if c.type == "expression")
        branches.append(
            (condition, [c for c in node.named_children if c.type.endswith("_statement")])
        )
        for clause in node.named_children:
            if clause.type == "elseif_clause":
                cond = next(c for c in clause.named_children if c.type == "expression")
                branches.append((cond, _statements(clause)))
            elif clause.type == "else_clause":
                branches.append((None, _statements(clause)))
        for cond, body in branches:
            if cond is None or self._truth(self.eval(cond, env)):
                self._block(body, env)
                return

    def _for(self, node: Node, env: dict[str, Any]) -> None:
        ident = next(c for c in node.named_children if c.type == "identifier")
        start, end = [c for c in node.named_children if c.type == "expression"][:2]
        counter, last = self.eval(start, env), self.eval(end, env)  # the bound once, as 1C
        while counter <= last:
            env[_text(ident)] = counter
            if not self._loop_pass(node, env):
                break
            counter = env[_text(ident)] + 1

    def _loop_pass(self, node: Node, env: dict[str, Any]) -> bool:
        """One pass of a loop's body: False when it broke out (Прервать), True
        when it ran to its end or went on to the next pass (Продолжить)."""
        try:
            self._block(_statements(node), env)
        except _Continue:
            pass
        except _Break:
            return False
        return True

    @staticmethod
    def _truth(value: Any) -> bool:
        if not isinstance(value, bool):
            raise BslException(
                f"Преобразование значения к типу Булево не может быть выполнено: {value!r}"
            )
        return value

    # -- expressions --------------------------------------------------------------------

    def eval(self, node: Node, env: dict[str, Any]) -> Any:
        kind = node.type
        if kind in ("expression", "parenthesized_expression"):
            (inner,) = node.named_children
            return self.eval(inner, env)
        if kind == "const_expression":
            return self._const(node.named_children[0])
        if kind == "identifier":
            name = _text(node)
            if name in env:
                return env[name]
            if name in self.globals:
                return self.globals[name]
            raise BslException(f"Переменная не определена ({name})")
        if kind == "binary_expression":
            left, operator, right = node.named_children
            return self._binary(_text(operator), left, right, env)
        if kind == "unary_expression":
            operator, operand = node.named_children
            value = self.eval(operand, env)
            if _text(operator).lower() in ("не", "not"):
                return not self._truth(value)
            if _text(operator) == "-":
                return -value
            raise Unsupported(f"unary {_text(operator)}")
        if kind == "ternary_expression":
            cond, yes, no = [c for c in node.named_children if c.type == "expression"]
            return self.eval(yes if self._truth(self.eval(cond, env)) else no, env)
        if kind == "method_call":
            name = _text(node.named_children[0])
            return self.call(name, *self._arguments(node, env))
        if kind == "call_expression":
            target, method = node.named_children[0], node.named_children[-1]
            obj = self.eval(target, env)
            name = _text(method.named_children[0])
            function = getattr(obj, name, None)
            if function is None:
                raise BslException(f"Метод объекта не обнаружен ({name})")
            return function(*self._arguments(method, env))
        if kind in ("property_access", "access"):
            children = node.named_children
            if len(children) == 1:
                return self.eval(children[0], env)
            obj = self.eval(children[0], env)
            name = _text(children[-1])
            if not hasattr(obj, name):
                raise BslException(f"Поле объекта не обнаружено ({name})")
            return getattr(obj, name)
        if kind == "new_expression":
            name = _text(next(c for c in node.named_children if c.type == "identifier"))
            make = self.constructors.get(name)
            if make is None:
                raise Unsupported(f"Новый {name}")
            arguments = [c for c in node.named_children if c.type == "arguments"]
            return make(*(self._arguments_of(arguments[0], env) if arguments else []))
        raise Unsupported(f"expression {kind}: {_text(node)[:60]}")

    def _arguments(self, call: Node, env: dict[str, Any]) -> list[Any]:
        (arguments,) = [c for c in call.named_children if c.type == "arguments"]
        return self._arguments_of(arguments, env)

    def _arguments_of(self, arguments: Node, env: dict[str, Any]) -> list[Any]:
        values: list[Any] = []
        for child in arguments.named_children:
            if child.type == "omitted_argument":
                values.append(_OMITTED)
            else:
                values.append(self.eval(child, env))
        return values

    def _binary(self, operator: str, left: Node, right: Node, env: dict[str, Any]) -> Any:
        word = operator.lower()
        if word in ("и", "and"):
            return self._truth(self.eval(left, env)) and self._truth(self.eval(right, env))
        if word in ("или", "or"):
            return self._truth(self.eval(left, env)) or self._truth(self.eval(right, env))
        a, b = self.eval(left, env), self.eval(right, env)
        if operator == "=":
            return _same(a, b)
        if operator == "<>":
            return not _same(a, b)
        if operator == "+":
            if isinstance(a, str):
                return a + ("" if b is None else str(b))
            return a + b
        operations: dict[str, Callable[[Any, Any], Any]] = {
            "-": lambda x, y: x - y,
            "*": lambda x, y: x * y,
            "/": lambda x, y: x / y,
            "<": lambda x, y: x < y,
            ">": lambda x, y: x > y,
            "<=": lambda x, y: x <= y,
            ">=": lambda x, y: x >= y,
        }
        if operator not in operations:
            raise Unsupported(f"operator {operator}")
        return operations[operator](a, b)

    @staticmethod
    def _const(node: Node) -> Any:
        kind = node.type
        if kind == "const_expression":
            (node,) = node.named_children
            kind = node.type
        if kind == "number":
            return _number(_text(node))
        if kind == "string":
            return _string(node)
        if kind == "boolean":
            return _text(node).lower() in ("истина", "true")
        if kind in ("UNDEFINED_KEYWORD", "NULL_KEYWORD"):
            return None
        raise Unsupported(f"constant {kind}: {_text(node)}")


class _Omitted:
    def __repr__(self) -> str:
        return "<omitted>"


_OMITTED = _Omitted()


def _statements(node: Node) -> list[Node]:
    return [c for c in node.named_children if c.type.endswith("_statement")]


def _split(node: Node, keyword: str) -> tuple[list[Node], list[Node]]:
    """A try statement's statements before and after ``keyword`` (Исключение)."""
    before: list[Node] = []
    after: list[Node] = []
    seen = False
    for child in node.children:
        if child.type == keyword:
            seen = True
        elif child.type.endswith("_statement"):
            (after if seen else before).append(child)
    return before, after
