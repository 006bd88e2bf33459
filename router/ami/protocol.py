"""AMI wire format without I/O: bytes in, messages out; actions in, bytes out.

Like h11, this module never touches a socket. The AJAM client hands it HTTP
bodies; a raw TCP transport (port 5038) will hand it stream chunks through
:class:`RawmanParser`, which speaks the very same framing. Everything that
can go wrong with input raises :class:`~router.errors.AMIProtocolError` and
nothing else, and every input is bounded so a broken or hostile peer cannot
make us buffer without limit.

What mxml loses, and what we do about it (see ``docs/reference/ajam-formats.md``):

* Key case and punctuation: ``Bar-Baz`` arrives as ``bar_baz``. Lookups on
  :class:`~router.ami.message.Message` fold keys the same way, so
  ``get("Bar-Baz")`` works on both formats. For display, well-known keys get
  their Asterisk spelling back from :data:`KNOWN_KEYS`; unknown ones stay
  lower-case.
* Repeated keys: ``chanvariable``, ``chanvariable-2`` are folded back into
  repeats of one key. A real key that itself ends in ``-<digit>`` cannot be
  told apart; Asterisk has none in its documentation.
* ``ChanVariable(name)`` style keys lose their parentheses. Prefer ``rawman``
  (the default) wherever exact key names matter.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

from lxml import etree

from router.ami.hazards import HAZARDOUS_ACTIONS, hazard
from router.ami.message import Event, Message, Response, normalize_key
from router.errors import AMIProtocolError, AMIValidationError
from router.logsafe import ThrottledWarning, peer_text

__all__ = [
    "BROKEN_ELEMENTS",
    "KNOWN_KEYS",
    "LONG_LINES",
    "MAX_ANSWER_LINES",
    "MAX_BODY_BYTES",
    "MAX_EVENT_LINES",
    "MAX_MXML_FIELDS",
    "MIN_MESSAGE_BYTES",
    "Action",
    "ActionResult",
    "LeftOutItem",
    "ListCollector",
    "Narrower",
    "RawmanParser",
    "UnreadableAnswer",
    "WireFormat",
    "assemble_result",
    "block_names",
    "encode_form",
    "encode_query",
    "encode_rawman",
    "parse_body",
    "parse_mxml",
    "parse_rawman",
    "raw_header",
    "split_waitevent",
]

#: Says from an event's raw text (its lines joined by ``\n``, the last without
#: one) whether the event is worth parsing; see :attr:`RawmanParser.narrow`.
#: Called on the hot path, so it should look only with ``str.find`` or
#: :func:`raw_header`, and keep an event it cannot judge.
Narrower = Callable[[str], bool]

#: Largest body we accept; a CoreShowChannels of 10,000 channels is about 8 MB.
MAX_BODY_BYTES = 32 * 1024 * 1024
#: Largest single line (a key and its value); Asterisk's own cap is far lower.
#: An event with a longer line is skipped (:data:`LONG_LINES`); an answer with
#: one fails its action (:class:`UnreadableAnswer`); a banner with one, or an
#: answer that names no action, is a protocol error.
MAX_LINE_BYTES = 64 * 1024
#: Asterisk reads at most 128 headers from an HTTP request (astman_append_headers).
MAX_ACTION_HEADERS = 128
#: Asterisk answers 413 to POST bodies over this size (main/http.c).
MAX_FORM_BYTES = 40960
#: Fields one mxml element may carry; Asterisk's largest event has well under 200.
MAX_MXML_FIELDS = 1000
#: Lines one rawman event may have, as an mxml element its fields. A message
#: costs ~60 to 200 bytes of memory a line, however short the line (``A:`` is
#: three bytes on the wire): one 32 MB event of 2.5 million short headers held
#: a gigabyte and stalled the event loop 12 s, within ``max_response_bytes``.
MAX_EVENT_LINES = MAX_MXML_FIELDS
#: Lines one rawman answer may have: a ``Command``'s output and a
#: ``GetConfig`` come as one header a line of text, so far more than an event.
MAX_ANSWER_LINES = 100_000

#: What one message counts at least against the byte bound of a body or of an
#: event list, however short it is on the wire: each is a :class:`Message` of
#: about 400 bytes in memory, and ``Event: A`` with its blank line is 13 on the
#: wire (a 32 MB body of them, 2.5 million events, held a gigabyte). Asterisk's
#: own messages are longer (a ``Ping`` answer about 80 bytes, an event with a
#: channel's snapshot 400 and more), so a body of them never comes near it.
MIN_MESSAGE_BYTES = 128

#: The AJAM answer formats the client asks for (``[asterisk] format``).
WireFormat = Literal["rawman", "mxml"]

# Canonical spellings used to undo mxml's lower-casing. Lookups never depend on
# this table (they fold case), it only makes mxml messages print like rawman.
KNOWN_KEYS: dict[str, str] = {
    normalize_key(k): k
    for k in (
        "AccountCode ActionID AppData Application AMIversion AsteriskVersion BridgeCreator "
        "BridgeName BridgeNumChannels BridgeTechnology BridgeType BridgeUniqueid BridgeId "
        "BridgeVideoSourceMode CallerIDName CallerIDNum Cause Cause-txt ChanVariable Channel "
        "ChannelState ChannelStateDesc ConnectedLineName ConnectedLineNum Context Count "
        "CoreCurrentCalls CoreMaxCalls CoreMaxFilehandles CoreMaxLoadAvg CoreReloadDate "
        "CoreReloadTime CoreRunUser CoreRunGroup CoreStartupDate CoreStartupTime "
        "DestAccountCode DestCallerIDName DestCallerIDNum DestChannel DestChannelState "
        "DestChannelStateDesc DestConnectedLineName DestConnectedLineNum DestContext DestExten "
        "DestLanguage DestLinkedid DestPriority DestUniqueid DialStatus DialString Duration "
        "Event EventList EventTV Exten Extension Family Hint Interface Key Language Linkedid "
        "ListItems Message Output Ping Priority Privilege Queue Reason Response Server "
        "SeverityService Severity Service SessionID SystemName Status StatusText Timestamp "
        "Uniqueid UserEvent Val Value Variable Version"
    ).split()
}

_UNIT_SEP = re.compile(rb"\r?\n")

log = logging.getLogger("router.ami")

#: Seconds between two warnings of events skipped for a line too long.
_LONG_LINES_EVERY = 60.0


class _LongLines(ThrottledWarning):
    """Events skipped for a line over :data:`MAX_LINE_BYTES`: counted, and said
    at most once a minute (the event's name, never its text).

    No Asterisk writes such a line, so the event is a broken or hostile AMI
    peer's. It once failed the whole read: over TCP the connection was
    dropped, and the reconcile after the reconnect read the same channel
    listing and failed again, for as long as the channel was up; over AJAM
    each ``CoreShowChannels`` failed. Now that one event (a listing's item)
    is left out and the rest is read (issue 16).

    An event list's closing event (``EventList: Complete`` with an
    ``ActionID``) is the exception: it is kept without its long lines, and
    counted here all the same, for skipped it ended no list and its action
    waited until it timed out (:func:`_long_line_event`).
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        super().__init__(_LONG_LINES_EVERY)
        #: Events skipped in this process.
        self.count = 0

    def note(self, head: str, *, ends_list: bool = False) -> None:
        """One event skipped; ``head`` is its first line (``Event: ...``).
        ``ends_list``: it ends an event list, kept without its long lines."""
        self.count += 1
        more = self.due()
        if more is None:
            return
        name = head.partition(":")[2].strip()
        log.warning(
            "an AMI event %r with a line of over %d bytes was %s: no Asterisk sends "
            "one (a broken or hostile AMI peer?)%s",
            name[:64],
            MAX_LINE_BYTES,
            "kept without that line (it ends an event list)" if ends_list else "skipped",
            more,
        )


#: The process's count of events skipped for a line too long (:class:`_LongLines`).
LONG_LINES = _LongLines()


class _NotAMessage(AMIProtocolError):
    """A block that is no AMI answer nor event (:func:`_block_to_message`)."""


class _Strays(ThrottledWarning):
    """Blocks of a stream or body that are no AMI message, skipped among the
    messages around them: counted, and said at most once a minute (never
    their text).

    Asterisk 22 writes a channel's ``CallerIDNum`` (and a dialplan's
    ``AppData`` and ``UserEvent`` values) as they are, line breaks and all,
    and a caller chooses the number: a SIP ``From`` user ``1%0D%0A%0D%0Ax``
    puts a blank line and a line ``x`` into every event of the call. Such a
    block once failed the whole read, and over TCP dropped the session: any
    caller could cut callrouter off Asterisk, again at each step of the
    call (issue 16). A body holding nothing else is still an error.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        super().__init__(_LONG_LINES_EVERY)
        #: Blocks skipped in this process.
        self.count = 0

    def note(self, count: int) -> None:
        self.count += count
        more = self.due(count)
        if more is None:
            return
        log.warning(
            "%d block(s) of the AMI stream that are no AMI answer nor event were "
            "skipped: a value holding a blank line (a caller number with CR LF, "
            "which Asterisk writes as it is; docs/asterisk.md) or a broken AMI peer%s",
            count,
            more,
        )


#: The process's count of blocks skipped as no AMI message (:class:`_Strays`).
STRAYS = _Strays()


def _event_head(head: bytes | str) -> str | None:
    """The first line of a block that begins ``head`` when it is an event's
    (``Event: ...``, in any case, after blank lines), else None."""
    text = head.decode("utf-8", errors="replace") if isinstance(head, bytes) else head
    first = text.lstrip("\r\n").partition("\n")[0].rstrip("\r")
    return first if first[:6].lower() == "event:" else None


def _too_long(line: str) -> bool:
    """Whether a line is over :data:`MAX_LINE_BYTES` (encoded as it came)."""
    return len(line) > MAX_LINE_BYTES // 4 and len(line.encode()) > MAX_LINE_BYTES


def _long_line_event(head: str, lines: Sequence[str], cut: Callable[[str], bool]) -> Message | None:
    """An event with lines over :data:`MAX_LINE_BYTES` (those ``cut`` says):
    skipped and noted (:data:`LONG_LINES`), unless its other lines make it an
    event list's end (``EventList: Complete`` and an ``ActionID``): that one
    is kept without its long lines, or its list would never end (issue 16:
    a reconcile waited for it until its ``CoreShowChannels`` timed out).

    An event whose long line is its ``ActionID``, or its ``EventList`` when it
    names an action, is a protocol error instead: it may be the part of an
    answer an action waits for (its list's end), and which one cannot be
    told. Skipped, that action waited until it timed out (issue 16); now the
    read fails at once, naming the bound (over TCP the connection is dropped:
    the actions in flight fail, the event stream reports a gap).

    ``head`` is its first line as read (cut to 256 bytes): its name when that
    line is one of the long ones. Only for events already found to have such
    a line: never on the normal path.
    """
    kept = [line for line in lines if line and not cut(line)]
    if not kept or kept[0][:6].lower() != "event:":
        kept.insert(0, head)  # the name line was a long one
    message = _block_to_message(kept)
    for line in lines:
        if not line or not cut(line):
            continue
        # A line left out of a stream is the marker and the line's key (RawmanParser._check_tail).
        key = line[1:] if line[:1] == _LEFT_OUT_TEXT else line[:64].partition(":")[0]
        folded = key.strip().lower()
        if folded == "actionid" or (folded == "eventlist" and message.action_id is not None):
            name = head.partition(":")[2].strip()
            raise AMIProtocolError(
                f"an AMI event {name[:64]!r} whose {key.strip()} line is over "
                f"{MAX_LINE_BYTES} bytes (the parser's line bound): the answer it may be "
                "part of cannot be told (a broken or hostile AMI peer?)"
            )
    if _is_list_end(message) and message.action_id is not None:
        LONG_LINES.note(head, ends_list=True)
        return message
    LONG_LINES.note(head)
    if message.action_id is not None:
        return LeftOutItem.of(head, message.action_id)
    return None


class LeftOutItem(Event):
    """An event with a line over :data:`MAX_LINE_BYTES` whose ``ActionID``
    was read: it stands for that event, left out, so the event list of the
    action it names counts it (:attr:`ActionResult.left_out`) and no one takes
    the list for whole (issue 16). It is no event of Asterisk's: the TCP
    client gives it to that action's list only, and :func:`split_waitevent`
    drops it.

    A left-out item once vanished: a list whose closing event counted no
    items (no ``ListItems``, or that line itself over the bound) or too few
    came back with ``unread_items`` 0, and a reconcile ended the live call
    whose channel it was, a presence answer said its extension's state was
    known to be Unknown. Its fields are the event's name (its first line, cut)
    and the ``ActionID``, never the peer's text otherwise.
    """

    __slots__ = ()

    @classmethod
    def of(cls, head: str, action_id: str) -> LeftOutItem:
        """The stand-in for the event whose first line is ``head``."""
        name = head.partition(":")[2].strip()[:64]
        return cls((("Event", name), ("ActionID", action_id)))


class UnreadableAnswer(Response):
    """An action's answer with a line over :data:`MAX_LINE_BYTES` whose
    ``ActionID`` line was read: it stands for that answer, and its action
    fails with :meth:`error` (the TCP client, :func:`assemble_result`).

    Such an answer once failed the whole read although its block still ended
    at its blank line: over TCP the connection was dropped, every action in
    flight failed with it, and the event stream reconnected with a gap
    (issue 16). Now only the action it answers fails, at once, and the rest
    is read on. Its fields are ``Response: Error``, the ``ActionID`` and the
    reason as ``Message`` (never the peer's text but the long line's key).
    """

    __slots__ = ()

    @property
    def reason(self) -> str:
        """Why it was not read: the long line's key and the bound."""
        return self.get("Message") or ""

    def error(self) -> AMIProtocolError:
        """The error its action fails with."""
        return AMIProtocolError(self.reason)


#: What a long line's key must look like to be named in an error (the
#: peer's bytes are never quoted otherwise).
_HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_()-]{0,63}")


def _long_key(line: str) -> str | None:
    """The key of a line too long (``cut`` said so), when it looks like one."""
    # A line left out of a stream is the marker and the line's key (RawmanParser._check_tail).
    key = line[1:] if line[:1] == _LEFT_OUT_TEXT else line[:_KEY_BYTES].partition(":")[0]
    key = key.strip()
    return key if _HEADER_NAME.fullmatch(key) else None


def _block_head(start: bytes | str) -> str | None:
    """The first line of a block that begins ``start`` (cut to its first 256
    bytes) when it is an event's or an answer's, else None."""
    head = _event_head(start)
    if head is not None:
        return head
    text = start.decode("utf-8", errors="replace") if isinstance(start, bytes) else start
    first = text.lstrip("\r\n").partition("\n")[0].rstrip("\r")
    return first if first[:9].lower() == "response:" else None


def _long_line_answer(head: str, lines: Sequence[str], cut: Callable[[str], bool]) -> Message:
    """An answer (``head``: its first line, ``Response: ...``) with lines over
    :data:`MAX_LINE_BYTES` (those ``cut`` says): an :class:`UnreadableAnswer`
    for the action its ``ActionID`` names, the block read to its end.

    An answer whose ``ActionID`` is among its long lines, or that has none,
    is a protocol error: which action waits for it cannot be told. Only for
    answers already found to have such a line: never on the normal path.
    """
    long_keys = [_long_key(line) for line in lines if line and cut(line)]
    kept = [line for line in lines if line and not cut(line)]
    if not kept or kept[0][:9].lower() != "response:":
        kept.insert(0, head)  # the first line was a long one
    action_id = _block_to_message(kept).action_id
    named = [k for k in long_keys if k is not None]
    key = next((k for k in named if k.lower() == "actionid"), named[0] if named else None)
    bound = f"{MAX_LINE_BYTES} bytes (the parser's line bound)"
    what = f"whose {key} line is over {bound}" if key is not None else f"with a line over {bound}"
    if action_id is None or (key is not None and key.lower() == "actionid"):
        raise AMIProtocolError(
            f"an AMI answer {what}, and whose ActionID cannot be "
            "read: the action it answers cannot be told (a broken or hostile AMI peer?)"
        )
    return UnreadableAnswer(
        (
            ("Response", "Error"),
            ("ActionID", action_id),
            (
                "Message",
                f"an AMI answer {what}: no Asterisk sends one (a broken or hostile AMI peer?)",
            ),
        )
    )


#: What stands in the buffer of :class:`RawmanParser` for a line too long that
#: is being read past (a line of its own; :func:`_long_line_event` leaves it
#: out), followed by that line's key (:meth:`RawmanParser._check_tail`).
_LEFT_OUT = b"\0"
_LEFT_OUT_TEXT = _LEFT_OUT.decode()
#: The most of a line too long read for its key (``ActionID``, ``EventList``).
_KEY_BYTES = 64


def _left_out(line: str) -> bool:
    """Whether a line of a stream's block is a long one: left out (the
    marker, :data:`_LEFT_OUT`) or over the bound in the read it came whole in."""
    return line[:1] == _LEFT_OUT_TEXT or _too_long(line)


_REPEAT_SUFFIX = re.compile(r"^(.*)-([0-9]+)$")


# --------------------------------------------------------------------------- rawman


def _decode(raw: bytes) -> str:
    # Asterisk passes caller names through byte-for-byte; a phone sending Latin-1
    # must not make us drop the event, so bad bytes become U+FFFD.
    return raw.decode("utf-8", errors="replace")


#: Lines read before, as their pairs: most of an event's lines recur (``Privilege:
#: call,all``, ``SystemName``, a device's ``Device`` and ``State``, a call's
#: ``Channel``, ``Uniqueid`` and ``Linkedid`` in each of its events), and a dict
#: lookup of the line costs less than its partition and checks (the pairs' keys,
#: shared, are hashed once). Only "Key: Value" lines the checks below pass, of
#: :data:`_PAIR_LINE_MAX` characters at most (Asterisk's are 23 a median, 56 at
#: the 99th percentile), and emptied once :data:`_PAIRS_MAX` are held: a peer's
#: unique lines hold 1.5 MB at most. Issue 16: a call's events take a third
#: less time here, a BLF flood's a sixth (bench/ANALYSIS.md, forty-fourth session).
_PAIRS: dict[str, tuple[str, str]] = {}
_PAIRS_MAX = 2048
_PAIR_LINE_MAX = 64


def _block_to_message(lines: Sequence[str]) -> Message:
    """One block's decoded lines -> a message; shared by the body and stream parsers."""
    pairs: list[tuple[str, str]] = []
    opaque: list[str] = []
    append = pairs.append
    known = _PAIRS
    for line in lines:
        pair = known.get(line)
        if pair is not None:
            append(pair)
            continue
        # Almost every line is "Key: Value": one partition, no further checks.
        key, sep, value = line.partition(": ")
        if sep and key and " " not in key and ":" not in key:
            pair = (key, value)
            if len(line) <= _PAIR_LINE_MAX:
                if len(known) >= _PAIRS_MAX:
                    known.clear()
                known[line] = pair
            append(pair)
            continue
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep or not key or key != key.strip() or " " in key:
            # Lines without a key (old Command output) are kept, as mxml does.
            opaque.append(line)
            continue
        append((key, value[1:] if value[:1] == " " else value))
    if not pairs:
        raise _NotAMessage(f"block without any 'Key: Value' line: {''.join(opaque[:1])[:80]!r}")
    first = pairs[0][0].lower()
    cls: type[Message]
    if first == "event":
        cls = Event
    elif first == "response":
        cls = Response
    else:
        raise _NotAMessage(
            f"block starts with {pairs[0][0][:80]!r}, expected 'Response' or 'Event'"
        )
    if opaque:
        pairs.append(("opaque_data", "\n".join(opaque)))
    return cls(tuple(pairs))


class RawmanParser:
    """Incremental parser for the ``Key: Value`` framing of /rawman and TCP AMI.

    ``feed`` may be called with any chunking (a Cyrillic name split across two
    reads is fine: bytes are decoded only once a block is whole). Buffered
    input is bounded by ``max_buffer``, and a line by ``MAX_LINE_BYTES``.

    Whole blocks are cut off the buffer in one piece and parsed as
    :func:`parse_rawman` parses a body (one decode, one split): per message
    this is what native TCP AMI spends its time on, and doing it line by line
    cost twice as much (``bench/ANALYSIS.md``, issue 16).
    """

    def __init__(self, *, max_buffer: int = MAX_BODY_BYTES, banner: bool = False) -> None:
        self._buffer = bytearray()
        self._max_buffer = max_buffer
        self._expect_banner = banner
        #: The ``Asterisk Call Manager/x.y.z`` greeting of a TCP connection.
        self.banner: str | None = None
        #: Event names worth a :class:`Message`; ``None``: every event. Other
        #: events are dropped before they are parsed (what Asterisk's
        #: ``Filter`` would have done, when the user may not send one), except
        #: one carrying an ``ActionID`` (an action's list item or outcome).
        self.wanted: frozenset[str] | None = None
        #: Wanted events read only in part: each name's :data:`Narrower` sees the
        #: event's raw text and says whether it is worth a message (the engine
        #: reads one ``Newexten`` of the ten a call makes: router/engine.py).
        self.narrow: Mapping[str, Narrower] | None = None
        #: Which ``ActionID`` is this session's: an unwanted event carrying
        #: another is dropped too (``None``: any ActionID keeps its event).
        self.ours: Callable[[str], bool] | None = None
        #: Events dropped by :attr:`wanted` or :attr:`narrow`, for status pages and tests.
        self.skipped = 0
        #: Blocks skipped as no AMI message (:class:`_Strays`): not a sign of life.
        self.strays = 0
        #: Events are being dropped (the TCP client fell behind a flood): the
        #: events that would be returned are counted in :attr:`dropped`
        #: instead of parsed; answers are parsed as ever (``_drop_blocks``).
        self.dropping = False
        #: Events counted, not parsed, while :attr:`dropping`.
        self.dropped = 0
        #: CR seen: messages end at CR LF CR LF only (see :meth:`feed`).
        self._crlf = False
        #: A line too long is being read past, up to its end (:meth:`_check_tail`);
        #: ``_carry``: the last byte read of it, which may begin that end.
        self._discarding = False
        self._carry = b""
        #: The message at the buffer's start is an event with a line too long
        #: (left out, :data:`_LEFT_OUT` in its place): its first line as read.
        self._cut_head: str | None = None

    def feed(self, data: bytes) -> list[Message]:
        """Add bytes; return every message completed by them."""
        if self._discarding:
            data = self._discard(data)
            if not data:
                return []
        buf = self._buffer
        if not buf and not self._expect_banner and data.endswith(b"\r\n\r\n"):
            # The usual read of a live session: whole events and nothing more
            # (Asterisk writes each event in one go), parsed without a copy.
            if len(data) > self._max_buffer:
                raise AMIProtocolError(
                    f"more than {self._max_buffer} bytes buffered without a complete message"
                )
            self._crlf = True
            if self.dropping:
                return self._drop(data)
            out, skipped, stray = _parse_blocks(data, self.wanted, self.narrow, self.ours)
            self.skipped += skipped
            self.strays += stray
            return out
        # Where the search for a message's end starts: nothing before it
        # ended one in an earlier read (a long message arriving in small
        # reads is then scanned once, not once a read).
        scan = max(0, len(buf) - 3)
        buf += data
        if len(buf) > self._max_buffer:
            raise AMIProtocolError(
                f"more than {self._max_buffer} bytes buffered without a complete message"
            )
        if self._expect_banner:
            if not self._read_banner():
                return []
            scan = 0
        if not self._crlf and b"\r" in data:
            self._crlf = True
        # A message ends only at CR LF CR LF, as Asterisk writes it: a value
        # may hold a bare LF (Asterisk writes AppData as the dialplan gave
        # it), and splitting there would cut an event in two or let that
        # value read as an event of its own. Input without any CR (hand-written
        # tests, old captures) ends a message at LF LF.
        if self._crlf:
            at = buf.rfind(b"\r\n\r\n", scan)
            end = at + 4 if at >= 0 else 0
        else:
            at = buf.rfind(b"\n\n", max(0, scan - 1))
            end = at + 2 if at >= 0 else 0
        if not end:
            # Blank lines a read brought alone (after one that ended a message)
            # are no part of a message either (hreview49: ``pending`` held the
            # early route back, router/ami/tcp.py).
            _drop_blank_lines(buf)
            self._check_tail()
            return []
        chunk = bytes(buf[:end])
        del buf[:end]
        # Blank lines between messages are not a message: drop them here so
        # that ``pending`` means "part of a message is buffered".
        _drop_blank_lines(buf)
        cut: Message | None = None
        if self._cut_head is not None:
            head, self._cut_head = self._cut_head, None
            cut, chunk = self._take_cut(head, chunk)
        self._check_tail()
        if self.dropping:
            out = self._drop(chunk)
        else:
            out, skipped, stray = _parse_blocks(chunk, self.wanted, self.narrow, self.ours)
            self.skipped += skipped
            self.strays += stray
        return out if cut is None else [cut, *out]

    def _take_cut(self, head: str, chunk: bytes) -> tuple[Message | None, bytes]:
        """The event a line too long was left out of, the first block of
        ``chunk``, whose first line was ``head`` (:func:`_long_line_event`),
        and the blocks after it."""
        sep = b"\r\n\r\n" if self._crlf else b"\n\n"
        at = chunk.find(sep)
        text = _decode(chunk[:at])
        lines = text.split("\r\n") if self._crlf else text.split("\n")
        _check_lines(head, len(lines))
        if head[:6].lower() == "event:":
            cut = _long_line_event(head, lines, _left_out)
        else:
            cut = _long_line_answer(head, lines, _left_out)
        return cut, chunk[at + len(sep) :].lstrip(b"\r\n")

    def _drop(self, data: bytes) -> list[Message]:
        """Whole blocks while :attr:`dropping`: only the answers among them."""
        out, skipped, dropped, stray = _drop_blocks(data, self.wanted, self.narrow, self.ours)
        self.skipped += skipped
        self.dropped += dropped
        self.strays += stray
        return out

    def _read_banner(self) -> bool:
        """Take the greeting line off the buffer; False while it is incomplete."""
        buf = self._buffer
        nl = buf.find(b"\n")
        if nl < 0:
            self._check_tail()
            return False
        line = bytes(buf[:nl]).rstrip(b"\r")
        del buf[: nl + 1]
        self._expect_banner = False
        if not line.startswith(b"Asterisk Call Manager/"):
            raise AMIProtocolError(f"not an AMI banner: {line[:80]!r}")
        self.banner = _decode(line)
        return True

    def _check_tail(self) -> None:
        """The unfinished line at the end of the buffer must stay under the line
        bound. An event's or an answer's is read past to its own end and left
        out, the rest of the block read on (:meth:`_take_cut`: the event is
        skipped, unless it ends an event list; the answer fails its action,
        :class:`UnreadableAnswer`); a banner's is a protocol error."""
        buf = self._buffer
        size = len(buf)
        if size > MAX_LINE_BYTES and buf.rfind(b"\n", size - MAX_LINE_BYTES - 1) < 0:
            # Whole messages were cut off the buffer: what is left is the start
            # of one, the one this line is in.
            if self._cut_head is None:
                head = None if self._expect_banner else _block_head(bytes(buf[:256]))
                if head is None:
                    raise AMIProtocolError(
                        f"line of over {MAX_LINE_BYTES} bytes without a newline "
                        "(the parser's line bound) in an AMI greeting or a block that "
                        "is no answer nor event"
                    )
                self._cut_head = head
            # The line starts after the last line end (CR LF only, when lines
            # end so: a bare LF is a value's, as in _blocks).
            start = buf.rfind(b"\r\n" if self._crlf else b"\n")
            start = 0 if start < 0 else start + (2 if self._crlf else 1)
            self._carry = bytes(buf[-1:])
            # Its key is kept beside the marker: an ActionID line too long
            # makes the event an error, not a skip (_long_line_event).
            key = bytes(buf[start : start + _KEY_BYTES]).partition(b":")
            del buf[start:]
            buf += _LEFT_OUT
            if key[1] and not any(c in key[0] for c in b"\0\r\n"):
                buf += key[0]
            self._discarding = True

    def _discard(self, data: bytes) -> bytes:
        """What follows, in ``data``, the line too long being read past, from
        the line end that ends it; b"" while that line goes on."""
        joined = self._carry + data
        at = joined.find(b"\r\n" if self._crlf else b"\n")
        if at < 0:
            self._carry = joined[-1:]
            return b""
        if not self._crlf and at and joined[at - 1] == 0x0D:
            at -= 1  # no CR seen before this one: the line ends CR LF after all
        self._discarding = False
        self._carry = b""
        return joined[at:]

    @property
    def pending(self) -> bool:
        """True while part of a message is buffered (or being read past)."""
        return bool(self._buffer) or self._discarding

    @property
    def buffered(self) -> int:
        """Bytes read since the last whole message (part of one, or none)."""
        return len(self._buffer)

    def close(self) -> None:
        """Declare end of input; a half-received message is an error."""
        if self.pending:
            raise AMIProtocolError("input ended in the middle of a message (truncated body)")


def parse_rawman(
    body: bytes,
    *,
    max_size: int = MAX_BODY_BYTES,
    wanted: frozenset[str] | None = None,
    narrow: Mapping[str, Narrower] | None = None,
    ours: Callable[[str], bool] | None = None,
) -> list[Message]:
    """Parse a whole /rawman body into messages, in order.

    ``wanted``: event names worth parsing, as :attr:`RawmanParser.wanted`;
    ``narrow`` and ``ours``: as :attr:`RawmanParser.narrow` and ``ours``.

    A whole body can be split on blank lines as text in one go, which is about
    twice as fast as feeding :class:`RawmanParser` line by line (the ingest
    benchmark, docs/performance.md); streams still need the incremental parser.
    """
    if len(body) > max_size:
        raise AMIProtocolError(f"body of {len(body)} bytes exceeds the limit of {max_size}")
    if body and not body.endswith(b"\n"):
        raise AMIProtocolError("body ends in the middle of a line (truncated)")
    limit = max_size // MIN_MESSAGE_BYTES
    # A block ends at a blank line, two bytes at least: a shorter body cannot
    # hold too many, and the count (two C scans) is skipped.
    if len(body) > 2 * limit:
        _check_count(body.count(b"\n\r\n") + body.count(b"\n\n"), limit, max_size)
    messages, _, _ = _parse_blocks(body, wanted, narrow, ours)
    if not messages:
        raise AMIProtocolError("empty body: no AMI message")
    return messages


def _check_count(count: int, limit: int, max_size: int) -> None:
    """Refuse a body of more messages than its byte bound pays for (:data:`MIN_MESSAGE_BYTES`)."""
    if count > limit:
        raise AMIProtocolError(
            f"a body of {count} messages, more than {limit} (each counts at least "
            f"{MIN_MESSAGE_BYTES} bytes of the limit of {max_size})"
        )


def block_names(data: bytes, end: int) -> set[str]:
    """The distinct names of the events among the whole blocks of ``data[:end]``,
    read off their first lines without parsing them (an action's answer has
    none). ``end`` is a block's start: everything before it is whole blocks
    ending in a blank line, as a TCP read cut there is.

    One C-level scan: a request's read holds a dozen events of two or three
    names, and this runs before its Redirect is written (Engine._route_early).
    """
    found = set(_EVENT_LINE.findall(data, 0, end))
    if data.startswith(b"Event: ", 0, end):
        line = data.find(b"\r\n", 0, end)
        found.add(data[7 : line if line >= 0 else end])
    return set(map(_decode, found))


#: An event's first line after a blank line: a literal start, so the scan is
#: a fast search (an alternative with ``\A`` made it ten times slower).
_EVENT_LINE = re.compile(rb"\r\n\r\nEvent: ([^\r\n]*)")
#: The same, up to the CR LF that ends it: a name with a bare CR or LF is no match.
_EVENT_NAME = re.compile(rb"\r\n\r\nEvent: ([^\r\n]*)(?=\r\n)")


def raw_header(block: str, key: str) -> str | None:
    """The value of ``key`` in one event's raw text, without parsing the rest.

    ``block`` is what a :data:`Narrower` is given: the event's lines joined by
    ``\n``. Exact spelling only (Asterisk's own); ``None`` when absent, so a
    narrower that cannot find its header keeps the event rather than lose it.
    """
    at = block.find(f"\n{key}: ")
    if at < 0:
        return None
    start = at + len(key) + 3
    end = block.find("\n", start)
    return block[start:] if end < 0 else block[start:end]


def _blocks(data: bytes) -> tuple[list[str], Iterator[list[str]] | None]:
    """Whole blocks of ``data``, decoded, each's lines joined by ``\n``; with
    the blocks' exact lines when a value holds a bare LF (else ``None``)."""
    text = _decode(data)
    exact: Iterator[list[str]] | None = None
    if "\r" not in text:
        blocks = _split_blocks(text)  # input without CR (see RawmanParser.feed)
    elif (flat := text.replace("\r\n", "\n")).count("\n") == len(text) - len(flat):
        # Every LF ended a CR LF (the usual case): one replace, one count, one split.
        blocks = _split_blocks(flat)
    else:
        # A value holds a bare LF: blocks and lines are cut at CR LF only and
        # the value keeps its LF; the screens below (the first line, the
        # narrowers' raw text) see the LF as a space, so it cuts nothing there.
        # (CR and LF at a block's start are blank lines between messages.)
        # Counted before they are split: a split is a string a line.
        raw = text.split("\r\n\r\n")
        for block in raw:
            if len(block) > _FEW_LINES_CHARS:
                _check_lines(block, block.count("\r\n") + 1)
        # Blank lines only (CR LF or a bare LF, as _split_blocks and the
        # buffer's cut take them): a lone CR at a block's start is its own, and
        # stripped here only, a block was an event or a stray depending on
        # whether its read held a bare LF too (hreview49).
        cut = [_without_blank_lines(block).split("\r\n") for block in raw]
        blocks = ["\n".join(line.replace("\n", " ") for line in lines) for lines in cut]
        exact = iter(cut)
    return blocks, exact


#: Blank lines at a block's start: CR LF, or a bare LF.
_BLANK_LINES = re.compile(r"(?:\r?\n)+")


def _without_blank_lines(block: str) -> str:
    """``block`` without the blank lines before it (never a lone CR: a line's own)."""
    if block[:1] not in ("\r", "\n"):
        return block
    found = _BLANK_LINES.match(block)
    return block if found is None else block[found.end() :]


def _drop_blank_lines(buf: bytearray) -> None:
    """Take the blank lines (CR LF, or a bare LF) off the start of ``buf``;
    a lone CR stays, as it may begin a CR LF the next read ends."""
    while buf[:1] == b"\n" or buf[:2] == b"\r\n":
        del buf[: 1 if buf[:1] == b"\n" else 2]


def _split_blocks(flat: str) -> list[str]:
    """``flat`` (lines ended by LF) cut at blank lines, each block without the
    blank lines before it: a read that began or ended inside the blank lines
    between messages (a caller's number holding CR LF writes more of them) left
    a block starting with LF, which the screens by first line did not know for
    an event (narrowed or not depending on where the reads were cut)."""
    blocks = flat.split("\n\n")
    if flat[:1] == "\n" or "\n\n\n" in flat:
        blocks = [block.lstrip("\n") for block in blocks]
    return blocks


def _parse_blocks(
    data: bytes,
    wanted: frozenset[str] | None,
    narrow: Mapping[str, Narrower] | None = None,
    ours: Callable[[str], bool] | None = None,
) -> tuple[list[Message], int, int]:
    """Whole blocks -> messages, how many events ``wanted`` and ``narrow``
    dropped unparsed, and how many blocks were no AMI message (:class:`_Strays`).

    An event outside ``wanted`` is recognised by its first line and skipped
    without being split into lines, unless it carries an ``ActionID`` (an
    action's list item or outcome, which its action waits for) that ``ours``
    (when given) says is one of ours: Asterisk sends every session the
    ``OriginateResponse`` of every client's Originate. An event named in
    ``narrow`` is parsed only when its narrower accepts its raw text.
    """
    blocks, exact = _blocks(data)
    check_lines = len(data) > MAX_LINE_BYTES
    messages: list[Message] = []
    skipped = stray = 0
    screen = wanted is not None or bool(narrow)
    for block in blocks:
        whole = next(exact) if exact is not None else None
        if not block or not block.strip("\n"):
            continue
        if screen and block.startswith("Event: ") and _screened_out(block, wanted, narrow, ours):
            skipped += 1
            continue
        try:
            message = _message(block, whole, check_lines)
        except _NotAMessage:
            stray += 1  # a body of nothing else fails (parse_rawman), a stream goes on
            continue
        if message is not None:
            messages.append(message)
    if stray:
        STRAYS.note(stray)
    return messages, skipped, stray


def _screened_out(
    block: str,
    wanted: frozenset[str] | None,
    narrow: Mapping[str, Narrower] | None,
    ours: Callable[[str], bool] | None,
) -> bool:
    """Whether an event block is skipped unparsed (:func:`_parse_blocks` says when)."""
    end = block.find("\n")
    name = block[7 : end if end > 0 else None]
    if wanted is not None and name not in wanted:
        return "\nActionID:" not in block or (
            ours is not None
            and (action_id := raw_header(block, "ActionID")) is not None
            and not ours(action_id)
        )
    if narrow:
        keep = narrow.get(name)
        return keep is not None and not keep(block) and "\nActionID:" not in block
    return False


def _message(block: str, whole: list[str] | None, check_lines: bool) -> Message | None:
    """One block that is kept, as a message, within the line bounds; None for
    an event with a line over :data:`MAX_LINE_BYTES`, skipped (:data:`LONG_LINES`),
    unless it ends an event list (:func:`_long_line_event`); an answer with
    one is an :class:`UnreadableAnswer` (:func:`_long_line_answer`)."""
    if len(block) > _FEW_LINES_CHARS:
        _check_lines(block, block.count("\n") + 1)
    lines = block.split("\n") if whole is None else whole
    if check_lines:
        for line in lines:
            if len(line) > MAX_LINE_BYTES // 4 and len(line.encode()) > MAX_LINE_BYTES:
                head = _block_head(block[:256])
                if head is None:
                    raise AMIProtocolError(
                        f"a block that is no AMI answer nor event with a line that exceeds "
                        f"{MAX_LINE_BYTES} bytes (the parser's line bound)"
                    )
                if head[:6].lower() == "event:":
                    return _long_line_event(head, lines, _too_long)
                return _long_line_answer(head, lines, _too_long)
    return _block_to_message(lines)


def _drop_blocks(
    data: bytes,
    wanted: frozenset[str] | None,
    narrow: Mapping[str, Narrower] | None = None,
    ours: Callable[[str], bool] | None = None,
) -> tuple[list[Message], int, int, int]:
    """:func:`_parse_blocks` while events are being dropped (the TCP client fell
    behind a flood, router/ami/tcp.py): the messages that must still be parsed,
    how many events ``wanted`` and ``narrow`` skipped, and how many events were
    counted instead of parsed, and how many blocks were no AMI message.

    The counts are the ones a parse would give (every event it would return
    is one the client would drop), but a dropped event costs no split into
    lines nor a :class:`Message`: in a flood that parse was nearly all of the
    CPU, spent on events thrown away. Still parsed: answers (a response, any
    block that is not a plain ``Event: ...``) and events carrying an
    ``ActionID`` that ``ours`` does not disown (a list's items, its closing
    event), so actions are answered through a flood. An event counted is not
    split, so the line bounds of a parse (:data:`MAX_EVENT_LINES`,
    ``MAX_LINE_BYTES``) do not apply to it: it holds no memory.
    """
    ids = b"\nactionid:" in data.lower()
    if not ids and data.startswith(b"Event: ") and b"\r\n\r\n\r\n" not in data:
        # Plain events, each ending at one CR LF CR LF (what Asterisk writes):
        # their names read off their first lines, in C, and counted by name.
        # A name with a bare CR or LF (which _blocks reads otherwise) is not
        # matched, and a block that is not an event is not: then, and when a
        # blank line is doubled, the blocks are gone through one by one.
        names = _EVENT_NAME.findall(data)
        first = data[7 : data.find(b"\r\n")]
        names.append(first)
        if len(names) == data.count(b"\r\n\r\n") and b"\n" not in first and b"\r" not in first:
            if wanted is None and not narrow:
                return [], 0, len(names), 0
            skipped = 0
            for raw, count in Counter(names).items():
                name = _decode(raw)
                if wanted is not None and name not in wanted:
                    skipped += count
                elif narrow and (keep := narrow.get(name)) is not None:
                    skipped += _narrowed_out(data, raw, raw == first, keep)
            return [], skipped, len(names) - skipped, 0
    blocks, exact = _blocks(data)
    check_lines = len(data) > MAX_LINE_BYTES
    messages: list[Message] = []
    skipped = dropped = stray = 0
    screen = wanted is not None or bool(narrow)
    for block in blocks:
        whole = next(exact) if exact is not None else None
        if not block or not block.strip("\n"):
            continue
        if block.startswith("Event: "):
            if screen and _screened_out(block, wanted, narrow, ours):
                skipped += 1
                continue
            # Parsed only when it may be an answer's part: an ActionID (in
            # any case, as Message reads it) that is not another client's.
            if not (
                ids
                and "\nactionid:" in block.lower()
                and (
                    (action_id := raw_header(block, "ActionID")) is None
                    or ours is None
                    or ours(action_id)
                )
            ):
                dropped += 1
                continue
        try:
            message = _message(block, whole, check_lines)
        except _NotAMessage:
            stray += 1
            continue
        if message is not None:
            messages.append(message)
    if stray:
        STRAYS.note(stray)
    return messages, skipped, dropped, stray


def _narrowed_out(data: bytes, name: bytes, at_start: bool, keep: Narrower) -> int:
    """How many of the events named ``name`` among the plain events of ``data``
    (see :func:`_drop_blocks`) ``keep`` refuses, each shown the text
    :func:`_blocks` gives it (a bare LF in a value read as a space)."""
    head = b"\r\n\r\nEvent: " + name + b"\r\n"
    refused = 0
    found = -4 if at_start else data.find(head)
    while found != -1:
        start = found + 4
        end = data.find(b"\r\n\r\n", start)
        text = _decode(data[start:end])
        flat = text.replace("\r\n", "\n")
        if flat.count("\n") != len(text) - len(flat):
            flat = "\n".join([line.replace("\n", " ") for line in text.split("\r\n")])
        if not keep(flat):
            refused += 1
        found = data.find(head, end)
    return refused


#: A block this short cannot hold more than :data:`MAX_EVENT_LINES` lines
#: (a character at least each, and a LF between): no count on the hot path.
_FEW_LINES_CHARS = 2 * MAX_EVENT_LINES


def _check_lines(block: str, count: int) -> None:
    """Refuse a block of more lines than a message of its kind may have,
    before its lines are split out (each would be a string, then a field)."""
    head = block[:80].lstrip("\r\n").partition("\n")[0].rstrip("\r")
    if head[:6].lower() == "event:":
        if count > MAX_EVENT_LINES:
            raise AMIProtocolError(
                f"an event of {count} lines, more than {MAX_EVENT_LINES} "
                f"(Asterisk's largest has well under 200): {head!r}"
            )
    elif count > MAX_ANSWER_LINES:
        raise AMIProtocolError(f"an answer of {count} lines, more than {MAX_ANSWER_LINES}")


# --------------------------------------------------------------------------- mxml

_XML_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
    load_dtd=False,
)
#: An element's attributes, in document order, each knowing its name
#: (``attrname``): one walk over them, however many there are.
_ATTRIBUTES = etree.XPath("@*")
#: Up to this many attributes ``Element.items()`` is the faster way to read them.
_FEW_ATTRIBUTES = 64


def _mxml_key(name: str, seen: set[str]) -> str:
    if "-" in name:  # mxml's mark for a repeat: chanvariable-2
        match = _REPEAT_SUFFIX.match(name)
        if match and match.group(1) in seen:
            name = match.group(1)
    seen.add(name)
    return KNOWN_KEYS.get(name, name)


def _mxml_fields(element: etree._Element) -> list[tuple[str, str]]:
    """An element's attributes as (name, value) pairs, in linear time.

    lxml's ``Element.items()`` looks each value up by its name: quadratic in
    their count (60,000 attributes on one ``<generic>``, half a megabyte of
    reply, stalled the event loop 16 s). Counting them is linear, so the
    count is bounded first; past a few, one XPath walk reads them.
    """
    count = len(element.attrib)
    if count > MAX_MXML_FIELDS:
        raise AMIProtocolError(
            f"<{element.tag}> has {count} attributes, more than {MAX_MXML_FIELDS}"
        )
    if count <= _FEW_ATTRIBUTES:
        return element.items()  # type: ignore[return-value]  # str in, str out
    found = _ATTRIBUTES(element)
    assert isinstance(found, list)
    return [
        (str(attr.attrname), str(attr))
        for attr in found
        if isinstance(attr, etree._ElementUnicodeResult)  # each of them: "@*" finds attributes
    ]


def parse_mxml(body: bytes, *, max_size: int = MAX_BODY_BYTES) -> list[Message]:
    """Parse an /mxml body (``<ajax-response>``) into messages, in order.

    A body that is no XML is read again an element a line (Asterisk writes
    each message on a line of its own): an element that is no XML is skipped
    (:data:`BROKEN_ELEMENTS`), the others are read (:func:`_mxml_by_lines`).
    """
    if len(body) > max_size:
        raise AMIProtocolError(f"body of {len(body)} bytes exceeds the limit of {max_size}")
    try:
        root = etree.fromstring(body, _XML_PARSER)
    except etree.XMLSyntaxError as exc:
        return _mxml_by_lines(body, f"malformed mxml: {exc}", max_size)
    except ValueError as exc:  # lxml refuses some inputs (e.g. str with encoding decl)
        raise AMIProtocolError(f"malformed mxml: {exc}") from None
    if root.tag != "ajax-response":
        raise AMIProtocolError(f"mxml root is <{root.tag}>, expected <ajax-response>")
    _check_count(len(root), max_size // MIN_MESSAGE_BYTES, max_size)
    return _mxml_messages(root)


def _mxml_messages(responses: Iterable[etree._Element]) -> list[Message]:
    """The messages of an ``<ajax-response>``'s ``<response>`` elements."""
    messages: list[Message] = []
    stray = 0
    for response in responses:
        if response.tag != "response":
            raise AMIProtocolError(f"unexpected <{response.tag}> in <ajax-response>")
        children = list(response)
        if len(children) != 1:
            raise AMIProtocolError(f"<response> holds {len(children)} elements, expected 1")
        seen: set[str] = set()
        pairs = tuple((_mxml_key(k, seen), v) for k, v in _mxml_fields(children[0]))
        if not pairs:
            raise AMIProtocolError("empty <generic/> element")
        first = pairs[0][0]
        if first == "Event":
            messages.append(Event(pairs))
        elif first == "Response":
            messages.append(Response(pairs))
        else:
            # Asterisk's mxml is its rawman text cut at blank lines, so a
            # caller number with one makes the rest of that event an element
            # of its own (an opaque-data one when its next line has no
            # colon): skipped as the rawman parsers skip it (:class:`_Strays`),
            # not the whole poll's events lost with the session (issue 16).
            stray += 1
    if stray:
        STRAYS.note(stray)
    if not messages:
        raise AMIProtocolError("empty <ajax-response>: no AMI message")
    return messages


#: The lines Asterisk writes around the elements of an /mxml body.
_MXML_OPEN = b"<ajax-response>"
_MXML_CLOSE = b"</ajax-response>"
#: An element's event name as Asterisk writes it, the first of its attributes
#: (its ``Event`` line comes first; a caller's lines come after it).
_MXML_EVENT = re.compile(rb"^<response [^>]{0,200}><[a-z]{1,64} event='([^'\x00-\x1f]{1,64})'")


def _mxml_by_lines(body: bytes, error: str, max_size: int) -> list[Message]:
    """The messages of an /mxml body that is no XML, read an element a line.

    Asterisk 22 (manager.c ``xml_translate``) writes each message as one line,
    ``<response ...><generic key='value' ... /></response>``: it cuts its
    text at each CR and LF, escapes ``<>&'"`` in values, and nothing else.
    So a value a caller chose can make that one line no XML: a number with a
    line ``uniqueid: x`` (Asterisk counts repeats of a key as spelled, then
    lower-cases it: one attribute twice), a line ``: x`` (an attribute with
    no name), a control byte, or a dialled number with a byte that is not
    UTF-8 (each seen on the sandbox's Asterisk 22). That once made the whole
    body no XML, and every other message of it was lost: a poll's events,
    other callers' calls among them, with the session (issue 16).

    Each line is parsed on its own, once (work linear in the body, however
    many are broken); a line that is no XML is skipped, never read in part:
    its values are the caller's to choose (:data:`BROKEN_ELEMENTS`). A body
    not in Asterisk's shape (its first and last lines) is refused, with the
    error of its first parse.
    """
    lines = body.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2 or lines[0].strip() != _MXML_OPEN or lines[-1].strip() != _MXML_CLOSE:
        raise AMIProtocolError(error)
    _check_count(len(lines) - 2, max_size // MIN_MESSAGE_BYTES, max_size)
    responses: list[etree._Element] = []
    broken: list[tuple[str, str]] = []
    for line in lines[1:-1]:
        if not line.strip():
            continue
        try:
            responses.append(etree.fromstring(line, _XML_PARSER))
        except (etree.XMLSyntaxError, ValueError) as exc:
            name = _MXML_EVENT.match(line)
            broken.append(
                (name.group(1).decode("ascii", "replace") if name else "", str(exc).split(",")[0])
            )
    if broken:
        BROKEN_ELEMENTS.note(broken)
    return _mxml_messages(responses)


class _BrokenElements(ThrottledWarning):
    """Elements of an /mxml body that are no XML, skipped among the others
    (:func:`_mxml_by_lines`): counted, and said at most once a minute, with
    the event's name and the parser's reason (never the values).
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        super().__init__(_LONG_LINES_EVERY)
        #: Elements skipped in this process.
        self.count = 0

    def note(self, broken: Sequence[tuple[str, str]]) -> None:
        self.count += len(broken)
        more = self.due(len(broken))
        if more is None:
            return
        name, reason = broken[0]
        log.warning(
            "%d message(s) of an /mxml answer that are no XML were skipped, the others "
            "read (the first: %s, %s): a caller's or a dialled number holding a line "
            "break and a key, a control byte or a byte that is not UTF-8, which Asterisk "
            "writes as it is (docs/asterisk.md); that call is not routed and takes its "
            "default route%s",
            len(broken),
            f"event {peer_text(name)}" if name else "no event",
            peer_text(reason),
            more,
        )


#: The process's count of /mxml elements skipped as no XML (:class:`_BrokenElements`).
BROKEN_ELEMENTS = _BrokenElements()


#: An HTML page's title, said in the error when one comes instead of an answer.
_HTML_TITLE = re.compile(rb"<title[^>]{0,200}>([^<]{1,200})<", re.IGNORECASE)


def parse_body(
    body: bytes,
    content_type: str | None = None,
    *,
    expect: WireFormat | None = None,
    max_size: int = MAX_BODY_BYTES,
    wanted: frozenset[str] | None = None,
    narrow: Mapping[str, Narrower] | None = None,
    ours: Callable[[str], bool] | None = None,
) -> list[Message]:
    """Parse an AJAM body in the format ``expect`` (what the client asked for).

    The peer does not choose the parser: a ``Content-Type`` that names the
    other format (``text/xml`` to a /rawman request, ``text/plain`` to an
    /mxml one) is a protocol error. Without ``expect`` (tools, tests) the
    format is the content type's, or the first byte's.

    ``wanted`` and ``narrow`` (rawman only; mxml is parsed whole) drop other
    events unparsed.
    """
    kind = (content_type or "").lower()
    if kind.startswith(("text/html", "application/xhtml")):
        # Asterisk's manager answers text/plain or text/xml; an HTML page is
        # a proxy's or a web server's (its error page): said as such, not as
        # "body ends in the middle of a line (truncated)".
        title = _HTML_TITLE.search(body[:4096])
        said_title = (
            f" titled {peer_text(title.group(1).decode('latin-1').strip())!r}" if title else ""
        )
        raise AMIProtocolError(
            f"an HTML page{said_title} (Content-Type {peer_text(content_type)}), not a "
            "manager answer: something other than Asterisk's manager answers at this url "
            "(a proxy, or another web server)"
        )
    said: WireFormat | None = (
        "mxml" if "xml" in kind else "rawman" if kind.startswith("text/plain") else None
    )
    if expect is None:
        expect = said or ("mxml" if not kind and body.lstrip()[:1] == b"<" else "rawman")
    elif said is not None and said != expect:
        raise AMIProtocolError(
            f"answer of type {content_type!r} to a {expect} request: not {expect}"
        )
    if expect == "mxml":
        return parse_mxml(body, max_size=max_size)
    return parse_rawman(body, max_size=max_size, wanted=wanted, narrow=narrow, ours=ours)


# --------------------------------------------------------------------------- actions

#: Parameters whose values are credentials (Login's Secret, Challenge's Key).
_SECRET_PARAMS = frozenset({"secret", "key"})

ParamValue = str | int | float | bool | Sequence[str] | Mapping[str, object]


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True, slots=True)
class Action:
    """An action to send: its name, ordered parameters (keys may repeat), ActionID."""

    name: str
    params: tuple[tuple[str, str], ...] = ()
    action_id: str | None = None

    @classmethod
    def build(
        cls,
        name: str,
        params: Mapping[str, ParamValue | None] | Iterable[tuple[str, str]] | None = None,
        *,
        action_id: str | None = None,
    ) -> Action:
        """Build from Python values: lists repeat the key, a dict for ``Variable``
        becomes repeated ``K=V``, booleans become ``true``/``false``, ``None`` is left out.
        """
        pairs: list[tuple[str, str]] = []
        items: Iterable[tuple[str, object]]
        items = params.items() if isinstance(params, Mapping) else (params or ())
        for key, value in items:
            if value is None:
                continue
            if isinstance(value, Mapping):
                pairs.extend((key, f"{k}={_scalar(v)}") for k, v in value.items())
            elif isinstance(value, list | tuple):
                pairs.extend((key, _scalar(v)) for v in value)
            else:
                pairs.append((key, _scalar(value)))
        return cls(name, tuple(pairs), action_id)

    def __repr__(self) -> str:
        # The Login action carries the AMI secret: never let it reach a log line.
        params = tuple(
            (k, "<redacted>" if k.lower() in _SECRET_PARAMS else v) for k, v in self.params
        )
        return f"Action(name={self.name!r}, params={params!r}, action_id={self.action_id!r})"

    def with_action_id(self, action_id: str) -> Action:
        return Action(self.name, self.params, action_id)

    def pairs(self) -> list[tuple[str, str]]:
        """Every header in send order: Action, ActionID, then the parameters."""
        if not self.name or _BAD_NAME.search(self.name) is not None:
            # Asterisk skips a header value's leading blanks: " Events" or
            # "\tWaitEvent" is Events or WaitEvent there, past every check
            # here that compares the name (the engine's own session's, the
            # hazards', a synchronous Originate's; hreview48, Asterisk 22).
            raise AMIValidationError(
                f"invalid action name {self.name[:64]!r}: no blank or control character"
            )
        out = [("Action", self.name)]
        if self.action_id is not None:
            out.append(("ActionID", self.action_id))
        out.extend([p for p in self.params if p[0].lower() not in ("action", "actionid")])
        if len(out) > MAX_ACTION_HEADERS:
            raise AMIValidationError(
                f"{self.name}: {len(out)} headers, Asterisk reads at most {MAX_ACTION_HEADERS}"
            )
        for key, value in out:
            if not key or _BAD_KEY.search(key) is not None:
                raise AMIValidationError(f"{self.name}: invalid parameter name {key!r}")
            if "\r" in value or "\n" in value:
                raise AMIValidationError(
                    f"{self.name}: parameter {key!r} contains a line break, which would "
                    "inject headers"
                )
            if "\0" in value:
                # Asterisk's C strings end at NUL: the value would arrive cut short.
                raise AMIValidationError(
                    f"{self.name}: parameter {key!r} contains a NUL byte, which would "
                    "silently truncate it in Asterisk"
                )
        # router/ami/hazards.py; every Redirect passes here: a set lookup, no call.
        if self.name.lower() in HAZARDOUS_ACTIONS:
            crash = hazard(self.name, self.params)
            if crash is not None:
                raise AMIValidationError(f"{self.name}: {crash}")
        return out


#: What no header name may hold: it would end the name early, or the line
#: (or, in AJAM's form encoding, the field).
_BAD_KEY = re.compile("[:\r\n\0 =&]")
#: What an action's name may not hold: a blank or a control character.
_BAD_NAME = re.compile("[\x00-\x20\x7f]")
#: What ``quote(..., safe="")`` leaves as it is: such a text needs no call
#: (most keys and values of an action; AJAM encodes a poll per batch).
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _quoted(text: str) -> str:
    return text if _UNRESERVED.fullmatch(text) else quote(text, safe="")


def _urlencode(pairs: Iterable[tuple[str, str]]) -> str:
    # quote(..., safe="") turns '+' into %2B and ' ' into %20: Asterisk decodes '+'
    # as a space, so a literal plus must never travel unescaped.
    return "&".join([f"{_quoted(k)}={_quoted(v)}" for k, v in pairs])


def _not_text(action: Action) -> AMIValidationError:
    """The error for an action with a header that is not text: a lone
    surrogate, which ``json.loads`` lets through (``"\\udcff"`` in a 1C
    answer). Looked for only once encoding failed: never on the hot path."""
    for key, value in action.pairs():
        if not _encodes(key):
            return AMIValidationError(
                f"{action.name}: parameter name {key!r} is not valid text (a lone surrogate)"
            )
        if not _encodes(value):
            return AMIValidationError(
                f"{action.name}: parameter {key!r} is not valid text (a lone surrogate)"
            )
    return AMIValidationError(f"{action.name}: not valid text")  # pragma: no cover


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode_query(action: Action) -> str:
    """The action as a URL query string for ``GET /rawman?...``."""
    try:
        return _urlencode(action.pairs())
    except UnicodeEncodeError:
        raise _not_text(action) from None


def encode_form(action: Action) -> bytes:
    """The action as an ``application/x-www-form-urlencoded`` POST body."""
    try:
        body = _urlencode(action.pairs()).encode("ascii")
    except UnicodeEncodeError:
        raise _not_text(action) from None
    if len(body) > MAX_FORM_BYTES:
        raise AMIValidationError(
            f"{action.name}: encoded action is {len(body)} bytes; Asterisk refuses POST "
            f"bodies over {MAX_FORM_BYTES} (HTTP 413)"
        )
    return body


def encode_rawman(action: Action) -> bytes:
    """The action as TCP AMI bytes (``Key: Value`` lines and a blank line)."""
    text = "".join([f"{k}: {v}\r\n" for k, v in action.pairs()])
    try:
        return text.encode("utf-8") + b"\r\n"
    except UnicodeEncodeError:
        raise _not_text(action) from None


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class ActionResult:
    """An action's answer: the response plus, for list actions, its items.

    ``complete`` is True for plain actions and for lists whose closing event
    arrived; ``closing`` is that event (it carries ``ListItems``).
    """

    response: Response
    items: tuple[Event, ...] = ()
    complete: bool = True
    closing: Event | None = None
    extra: tuple[Message, ...] = field(default=())
    #: The list's items the parser left out, each for a line over
    #: :data:`MAX_LINE_BYTES` (:class:`LeftOutItem`): counted whatever the
    #: closing event says.
    left_out: int = 0

    @property
    def ok(self) -> bool:
        return self.response.ok

    @property
    def is_list(self) -> bool:
        return (self.response.event_list or "").lower() == "start"

    @property
    def unread_items(self) -> int:
        """How many of the list's items are not in :attr:`items`, each skipped
        for a line over :data:`MAX_LINE_BYTES`: those the parser left out
        (:attr:`left_out`), or those the closing event counts (``ListItems``)
        beyond :attr:`items` when that is more. The parser's count holds when
        the closing event counts none (no ``ListItems``, or that line itself
        over the bound) or too few (issue 16)."""
        raw = self.closing.get("ListItems") if self.closing is not None else None
        if raw is None or not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
            return self.left_out
        return max(self.left_out, int(raw) - len(self.items))


def _is_list_end(msg: Message) -> bool:
    return (msg.event_list or "").lower() == "complete"


def assemble_result(messages: Sequence[Message], *, strict: bool = True) -> ActionResult:
    """Turn the messages of one AJAM action body into an :class:`ActionResult`.

    Over HTTP a list's items and closing event come in the same body as the
    response, so a list without its ``EventList: Complete`` means the body was
    cut: with ``strict`` that is a protocol error.
    """
    if not messages or not isinstance(messages[0], Response):
        first = messages[0] if messages else None
        raise AMIProtocolError(f"action body does not start with a response: {first!r}")
    response = messages[0]
    if type(response) is UnreadableAnswer:
        raise response.error()
    if (response.event_list or "").lower() != "start":
        return ActionResult(response, extra=tuple(messages[1:]))
    items: list[Event] = []
    left_out = 0
    for index, msg in enumerate(messages[1:], start=1):
        if not isinstance(msg, Event):
            raise AMIProtocolError(f"unexpected {msg!r} inside an event list")
        if type(msg) is LeftOutItem:
            left_out += 1
            continue
        if _is_list_end(msg):
            rest = tuple(messages[index + 1 :])
            return ActionResult(response, tuple(items), True, msg, rest, left_out)
        items.append(msg)
    if strict:
        raise AMIProtocolError(
            f"event list of {len(items)} items has no closing 'EventList: Complete' (truncated)"
        )
    return ActionResult(response, tuple(items), False, left_out=left_out)


def split_waitevent(messages: Sequence[Message]) -> tuple[Response, list[Event]]:
    """Split a WaitEvent reply into its response and the events it delivered.

    The closing ``WaitEventComplete`` marker is dropped: it is framing, not news.
    """
    if not messages or not isinstance(messages[0], Response):
        raise AMIProtocolError("WaitEvent reply does not start with a response")
    response = messages[0]
    events: list[Event] = []
    for msg in messages[1:]:
        if not isinstance(msg, Event):
            raise AMIProtocolError(f"unexpected {msg!r} in a WaitEvent reply")
        if msg.name == "WaitEventComplete" or type(msg) is LeftOutItem:
            continue
        events.append(msg)
    return response, events


class ListCollector:
    """Assemble list results from an interleaved message stream (TCP AMI).

    Over TCP a list's items arrive as separate events mixed with unrelated
    ones; they are matched to their action by ActionID. ``feed`` returns the
    finished result when a response or closing event completes one, and
    ``None`` for messages that do not belong to a pending action.
    """

    def __init__(self, *, max_items: int = 1_000_000, max_bytes: int = MAX_BODY_BYTES) -> None:
        self._pending: dict[str, tuple[Response, list[Event]]] = {}
        self._waiting: set[str] = set()
        self._max_items = max_items
        #: Each list's items as they were written (their lines, each at least
        #: :data:`MIN_MESSAGE_BYTES`), at most: as
        #: much as one AJAM answer may hold, so a list that never completes
        #: cannot fill memory before its action times out.
        self._max_bytes = max_bytes
        self._bytes: dict[str, int] = {}
        #: Each list's items the parser left out (:class:`LeftOutItem`).
        self._left_out: dict[str, int] = {}

    def expect(self, action_id: str) -> None:
        self._waiting.add(action_id)

    def collecting(self, action_id: str) -> int | None:
        """How many items the list of ``action_id`` has so far; ``None`` when
        no list of it is open (no answer yet, or a plain one)."""
        pending = self._pending.get(action_id)
        return None if pending is None else len(pending[1])

    def forget(self, action_id: str) -> None:
        """An action given up on (a timeout): whatever still arrives for it is not kept."""
        self._waiting.discard(action_id)
        self._pending.pop(action_id, None)
        self._bytes.pop(action_id, None)
        self._left_out.pop(action_id, None)

    def feed(self, msg: Message) -> tuple[str, ActionResult] | None:
        action_id = msg.action_id
        if action_id is None:
            return None
        if isinstance(msg, Response) and action_id in self._waiting:
            self._waiting.discard(action_id)
            if (msg.event_list or "").lower() == "start":
                self._pending[action_id] = (msg, [])
                return None
            return action_id, ActionResult(msg)
        pending = self._pending.get(action_id)
        if pending is None or not isinstance(msg, Event):
            return None
        if _is_list_end(msg):
            del self._pending[action_id]
            self._bytes.pop(action_id, None)
            left_out = self._left_out.pop(action_id, 0)
            return action_id, ActionResult(
                pending[0], tuple(pending[1]), True, msg, left_out=left_out
            )
        if type(msg) is LeftOutItem:
            self._left_out[action_id] = self._left_out.get(action_id, 0) + 1
            return None
        if len(pending[1]) >= self._max_items:
            raise AMIProtocolError(f"event list for {action_id} exceeds {self._max_items} items")
        written = sum(len(k) + len(v) + 4 for k, v in msg.fields)
        size = self._bytes.get(action_id, 0) + max(written, MIN_MESSAGE_BYTES)
        if size > self._max_bytes:
            raise AMIProtocolError(f"event list for {action_id} exceeds {self._max_bytes} bytes")
        self._bytes[action_id] = size
        pending[1].append(msg)
        return None
