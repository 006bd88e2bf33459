"""Immutable AMI messages: ordered, repeated keys kept, looked up case-insensitively.

AMI is a list of ``Key: Value`` pairs, not a dict: keys repeat
(``ChanVariable``, ``Output``) and their order matters. The two AJAM formats
also spell keys differently: ``/rawman`` keeps Asterisk's spelling
(``CallerIDNum``, ``Cause-txt``) while ``/mxml`` lower-cases it and turns every
other character into ``_`` (``calleridnum``, ``cause_txt``). Lookups therefore
go through :func:`normalize_key`, the same folding mxml applies, so
``msg.get("Cause-txt")`` finds the field whichever format it came in.

This module imports no I/O library: it is shared by every transport.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from router.ami.numbers import ascii_float

__all__ = ["Event", "Message", "Response", "make_message", "normalize_key", "sent_by_channel"]

_NORMALIZED: dict[str, str] = {}
_NORMALIZED_MAX: Final = 4096
#: Keys longer than this are folded each time, not remembered: a peer's keys
#: may be a line long (64 KB), and 4,096 of them held half a gigabyte for the
#: life of the process. Asterisk's keys are under 40 characters.
_NORMALIZED_KEY_MAX: Final = 128


def normalize_key(key: str) -> str:
    """Fold a key the way mxml does: lower-case, non-alphanumerics to ``_``.

    Memoised (bounded) because the same few hundred field names recur in every
    event, and this sits on the ingest hot path.
    """
    found = _NORMALIZED.get(key)
    if found is not None:
        return found
    norm = "".join(ch if ch.isalnum() and ch.isascii() else "_" for ch in key.lower())
    if norm[:1].isdigit():
        norm = "_" + norm
    if len(_NORMALIZED) < _NORMALIZED_MAX and len(key) <= _NORMALIZED_KEY_MAX:
        _NORMALIZED[key] = norm
    return norm


_set = object.__setattr__
#: Up to this many fields a lookup that misses the keys as spelled scans them
#: folded; a longer message (a peer's, a long list item) builds the folded
#: index once, so repeated misses never cost a scan each.
_SCAN_MAX: Final = 64


class Message:
    """One AMI block: an immutable, ordered sequence of (key, value) pairs."""

    __slots__ = ("_exact", "_fields", "_index")

    _fields: tuple[tuple[str, str], ...]
    _index: dict[str, tuple[str, ...]] | None
    _exact: dict[str, str] | None

    def __init__(self, fields: Iterable[tuple[str, str]]) -> None:
        _set(self, "_fields", fields if type(fields) is tuple else tuple(fields))
        _set(self, "_index", None)
        _set(self, "_exact", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _lookup(self) -> dict[str, tuple[str, ...]]:
        index = self._index
        if index is None:
            # Lists first, tuples after: appending to a tuple copies it, and a
            # peer repeating one key 100,000 times made that quadratic.
            lists: dict[str, list[str]] = {}
            for key, value in self._fields:
                norm = normalize_key(key)
                have = lists.get(norm)
                if have is None:
                    lists[norm] = [value]
                else:
                    have.append(value)
            index = {norm: tuple(values) for norm, values in lists.items()}
            object.__setattr__(self, "_index", index)
        return index

    # -- mapping-like access -------------------------------------------------

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        """All pairs in wire order, repeated keys included."""
        return self._fields

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of ``key`` (any spelling), or ``default``."""
        # rawman keeps Asterisk's spelling, which is how callers write keys:
        # a dict of the keys as spelled answers most lookups without the
        # folded index. Built on the first lookup (one C-level call; events
        # nobody looks into never pay for it): the engine reads a dozen
        # fields of each event it handles, and a scan per field cost more.
        exact = self._exact
        if exact is None:
            exact = self._spelled()
        found = exact.get(key)
        if found is not None:
            return found
        if self._index is not None or len(self._fields) > _SCAN_MAX:
            values = self._lookup().get(normalize_key(key))
            return values[0] if values else default
        # A miss asks each key folded, without building the folded index: most
        # misses find nothing (a DialState's Linkedid, a Response's
        # EventList), and the index cost three times this scan.
        wanted = normalize_key(key)
        folded = _NORMALIZED.get
        for name, value in self._fields:
            if (folded(name) or normalize_key(name)) == wanted:
                return value
        return default

    def spelled(self) -> Mapping[str, str]:
        """The first value of each key, keys exactly as received (no folding).

        For readers of many fields of one event (a CEL record has fifteen):
        a dict lookup each instead of a :meth:`get` call each; a key missing
        here may still be present in another spelling (ask :meth:`get`).
        """
        return self._spelled()

    def _spelled(self) -> dict[str, str]:
        exact = self._exact
        if exact is None:
            exact = dict(reversed(self._fields))  # the first of a repeated key wins
            _set(self, "_exact", exact)
        return exact

    def getall(self, key: str) -> list[str]:
        """Every value of a repeated key, in order (``Output``, ``ChanVariable``)."""
        if self._index is not None or len(self._fields) > _SCAN_MAX:
            return list(self._lookup().get(normalize_key(key), ()))
        # As get's miss: one pass, no index (an event rule's guard asks one
        # field of every Hangup).
        wanted = normalize_key(key)
        folded = _NORMALIZED.get
        return [
            value for name, value in self._fields if (folded(name) or normalize_key(name)) == wanted
        ]

    def __getitem__(self, key: str) -> str:
        values = self._lookup().get(normalize_key(key))
        if not values:
            raise KeyError(key)
        return values[0]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and normalize_key(key) in self._lookup()

    def keys(self) -> list[str]:
        """Distinct keys in first-seen order, spelled as received."""
        seen: dict[str, str] = {}
        for key, _ in self._fields:
            seen.setdefault(normalize_key(key), key)
        return list(seen.values())

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._fields)

    def to_dict(self) -> dict[str, str | list[str]]:
        """A JSON-friendly dict; repeated keys become lists."""
        out: dict[str, str | list[str]] = {}
        for key, value in self._fields:
            have = out.get(key)
            if have is None:
                out[key] = value
            elif isinstance(have, list):
                have.append(value)
            else:
                out[key] = [have, value]
        return out

    # -- AMI semantics ---------------------------------------------------------

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    @property
    def event_list(self) -> str | None:
        """``start`` on a list's opening response, ``Complete`` on its closing event."""
        return self.get("EventList")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return type(self) is type(other) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._fields))

    def __repr__(self) -> str:
        head = ", ".join(f"{k}={v!r}" for k, v in self._fields[:4])
        more = f", ... +{len(self._fields) - 4}" if len(self._fields) > 4 else ""
        return f"{type(self).__name__}({head}{more})"


class Response(Message):
    """The answer to an action (``Response: Success|Error|Goodbye|Follows``)."""

    __slots__ = ()

    @property
    def status(self) -> str:
        return self.get("Response") or ""

    @property
    def ok(self) -> bool:
        """True unless Asterisk said ``Error``; ``Goodbye`` (Logoff) counts as ok."""
        return self.status.lower() != "error"

    @property
    def message(self) -> str | None:
        return self.get("Message")


class Event(Message):
    """Something that happened: a block with an ``Event`` key.

    List items (``CoreShowChannel``) are events too; they carry the ActionID
    of the action that asked for them.
    """

    __slots__ = ()

    @property
    def name(self) -> str:
        # Asterisk always leads with "Event: X"; reading it there avoids
        # building the lookup index for events nobody looks into.
        fields = self._fields
        if fields and fields[0][0] in ("Event", "event"):
            return fields[0][1]
        return self.get("Event") or ""

    @property
    def timestamp(self) -> float | None:
        """Asterisk's own ``Timestamp`` (epoch seconds), or ``None``.

        ASCII digits and finite only: a ``nan`` would make latencies NaN and
        the JSON lines that carry them invalid.
        """
        return ascii_float(self.get("Timestamp"))


def make_message(fields: Iterable[tuple[str, str]]) -> Message:
    """Build the right class by the block's first key, as Asterisk always leads with it."""
    pairs = tuple(fields)
    if pairs:
        first = pairs[0][0].lower()
        if first == "event":
            return Event(pairs)
        if first == "response":
            return Response(pairs)
    return Message(pairs)


def sent_by_channel(event: Event) -> bool:
    """Whether a channel's dialplan sent this ``UserEvent``, not an AMI client.

    Asterisk writes the channel snapshot (``Channel``, ``Exten``,
    ``CallerIDNum``, ``Uniqueid``...) before the ``UserEvent`` key of a
    dialplan's ``UserEvent()``. The AMI action ``UserEvent`` writes its
    ``UserEvent`` key first and then every header the sender chose, a
    ``Channel`` and an ``Exten`` among them: a token with ``ami:UserEvent``
    (or a second manager user) made callrouter redirect, and so hang up, a
    live call of the sandbox that never asked to be routed, with a caller
    and a DID of its choosing. So only a ``Channel`` ahead of ``UserEvent``
    counts (mxml lower-cases the keys).
    """
    for key, _ in event.fields:
        name = key.lower()
        if name == "channel":
            return True
        if name == "userevent":
            return False
    return False
