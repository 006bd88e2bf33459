"""A fake Asterisk speaking native AMI on a loopback port, for the TCP client's tests.

It answers what Asterisk 22 answers (banner, Login with the plain secret or
the MD5 challenge, Ping, a list action whose items are interleaved with other
events, ``Permission denied``), and can misbehave on request: close every
connection (a FIN), go silent without closing (a half-open socket as the
client sees it), hold back an action's answer, answer in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field

from router.ami.protocol import Action, encode_rawman

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
CHALLENGE = "840910381"


def block(*pairs: tuple[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in pairs).encode() + b"\r\n"


@dataclass
class Session:
    writer: asyncio.StreamWriter
    events_mask: str | None = None
    authenticated: bool = False


@dataclass
class FakeAMI:
    secret: str = "s3cret"
    username: str = "router"
    #: Actions answered ``Permission denied`` (lower case).
    denied: set[str] = field(default_factory=set)
    #: Actions never answered (lower case).
    unanswered: set[str] = field(default_factory=set)
    #: Hold answers until this many actions are waiting, then answer in reverse.
    reverse_batch: int = 0
    silent: bool = False
    logins: int = 0
    received: list[dict[str, str]] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    _held: list[tuple[Session, bytes]] = field(default_factory=list)
    server: asyncio.base_events.Server | None = None
    port: int = 0
    #: Close the connection after answering this action (lower case), once.
    drop_after: str | None = None
    #: Close the connection instead of answering this action (lower case), once.
    drop_on: str | None = None
    #: Answer CoreShowChannels without its closing ``EventList: Complete``.
    unfinished_lists: bool = False
    #: A value for a third CoreShowChannel item's ``ApplicationData`` (a
    #: hostile peer's line longer than the parser's bound), between the two.
    long_item: str | None = None
    #: A value for a ``Junk`` line of the closing ``CoreShowChannelsComplete``
    #: (a hostile peer's line longer than the parser's bound), before its ActionID.
    long_closing: str | None = None
    #: Which line of the closing event carries :attr:`long_closing`: ``Junk``
    #: (a line of its own), or ``ActionID`` / ``EventList`` (appended to its value).
    long_closing_key: str = "Junk"
    #: A value appended to the ``Message`` line of every plain answer (a
    #: ``Ping``'s, a ``Getvar``'s): a line longer than the parser's bound.
    long_answer: str | None = None
    #: Only a ``Getvar`` of this ``Variable`` gets :attr:`long_answer` (None: every one).
    long_answer_variable: str | None = None
    #: The ``Message`` of a refused login.
    login_failure: str = "Authentication failed"
    #: Actions (lower case) answered only once :attr:`released` is set, with
    #: nothing else answered on their session meanwhile, as Asterisk 22 holds
    #: a synchronous Originate: its session's thread waits for the call and
    #: reads no Ping (the sandbox, 2026-12-07); answered as it did then.
    blocking: set[str] = field(default_factory=set)
    #: How many ``DBGetTreeResponse`` items of about 1 KB a ``DBGetTree`` lists
    #: (a large AstDB tree; 40,000 of them were 41 MB on the sandbox).
    tree_items: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> FakeAMI:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.close_all()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def close_all(self) -> None:
        for session in self.sessions:
            session.writer.close()
        self.sessions.clear()

    def push(self, *pairs: tuple[str, str]) -> None:
        """An event to every logged-in session that asked for events."""
        data = block(*pairs)
        for session in self.sessions:
            if session.authenticated and session.events_mask != "off":
                session.writer.write(data)

    def push_raw(self, data: bytes) -> None:
        for session in self.sessions:
            if session.authenticated:
                session.writer.write(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(writer)
        self.sessions.append(session)
        writer.write(BANNER)
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                if self.silent:
                    continue
                headers: dict[str, str] = {}
                for line in raw.decode().split("\r\n"):
                    if ": " in line:
                        key, value = line.split(": ", 1)
                        headers.setdefault(key.lower(), value)
                self.received.append(headers)
                if headers.get("action", "").lower() in self.blocking:
                    await self.released.wait()
                    writer.write(
                        b"Response: Error\r\nActionID: "
                        + headers.get("actionid", "").encode()
                        + b"\r\nMessage: Originate failed\r\n\r\n"
                    )
                    continue
                await self._answer(session, headers)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(ValueError):
                self.sessions.remove(session)
            writer.close()

    async def _answer(self, session: Session, h: dict[str, str]) -> None:
        name = h.get("action", "").lower()
        if self.drop_on == name:
            self.drop_on = None
            session.writer.close()
            return
        aid = ("ActionID", h.get("actionid", ""))
        out: bytes
        if name == "challenge":
            out = block(("Response", "Success"), aid, ("Challenge", CHALLENGE))
        elif name == "login":
            self.logins += 1
            expected = hashlib.md5((CHALLENGE + self.secret).encode()).hexdigest()
            ok = h.get("username") == self.username and (
                h.get("secret") == self.secret
                or (h.get("authtype", "").lower() == "md5" and h.get("key") == expected)
            )
            if ok:
                session.authenticated = True
                session.events_mask = h.get("events")
                out = block(("Response", "Success"), aid, ("Message", "Authentication accepted"))
            else:
                session.writer.write(
                    block(("Response", "Error"), aid, ("Message", self.login_failure))
                )
                session.writer.close()
                return
        elif not session.authenticated:
            out = block(("Response", "Error"), aid, ("Message", "Permission denied"))
        elif name in self.unanswered:
            return
        elif name in self.denied:
            out = block(("Response", "Error"), aid, ("Message", "Permission denied"))
        elif name == "coreshowchannels":
            out = (
                block(("Response", "Success"), aid, ("EventList", "start"), ("Message", "go"))
                + block(("Event", "CoreShowChannel"), aid, ("Channel", "Local/1@x-0001;1"))
                + block(("Event", "Newexten"), ("Channel", "Local/9@y-0002;1"))
                + (
                    b""
                    if self.long_item is None
                    else block(
                        ("Event", "CoreShowChannel"),
                        aid,
                        ("Channel", "PJSIP/evil-0004"),
                        ("ApplicationData", self.long_item),
                    )
                )
                + block(("Event", "CoreShowChannel"), aid, ("Channel", "Local/2@x-0003;1"))
            )
            if not self.unfinished_lists:
                closing = [aid, ("EventList", "Complete"), ("ListItems", "2")]
                if self.long_closing is not None:
                    key = self.long_closing_key
                    if key == "Junk":
                        closing.insert(0, ("Junk", self.long_closing))
                    else:
                        closing = [
                            (k, v + self.long_closing if k == key else v) for k, v in closing
                        ]
                out += block(("Event", "CoreShowChannelsComplete"), *closing)
        elif name == "dbgettree":
            out = block(
                ("Response", "Success"),
                aid,
                ("EventList", "start"),
                ("Message", "Result will follow"),
            )
            for i in range(self.tree_items):
                out += block(
                    ("Event", "DBGetTreeResponse"),
                    aid,
                    ("Key", f"/big/k{i:06d}"),
                    ("Val", "v" * 1000),
                )
            out += block(
                ("Event", "DBGetTreeComplete"),
                aid,
                ("EventList", "Complete"),
                ("ListItems", str(self.tree_items)),
            )
        elif name == "userevent":
            # Asterisk copies the ActionID into the event, which may come first.
            out = block(("Event", "UserEvent"), ("UserEvent", h.get("userevent", "")), aid) + block(
                ("Response", "Success"), aid
            )
        elif self.long_answer is not None and self.long_answer_variable in (
            None,
            h.get("variable"),
        ):
            out = block(("Response", "Success"), aid, ("Message", "m" + self.long_answer))
        else:
            out = block(("Response", "Success"), aid, ("Ping", "Pong"))
        if self.reverse_batch and name == "getvar":
            self._held.append((session, out))
            if len(self._held) >= self.reverse_batch:
                for held_session, data in reversed(self._held):
                    held_session.writer.write(data)
                self._held.clear()
            return
        session.writer.write(out)
        if self.drop_after == name:
            self.drop_after = None
            session.writer.close()


def action_bytes(name: str, action_id: str, **params: str) -> bytes:
    return encode_rawman(Action(name, tuple(params.items()), action_id))
