"""CEL records written the way Asterisk 22 writes them, for call-life tests.

The real captures (tests/fixtures/cel/) are the ground truth; this builder
makes the same shapes for scenarios a capture cannot vary (orders,
duplicates, bounds).
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping

from router.calllife.model import CelRecord


class Cel:
    """One call's records, in order, on a fake Asterisk clock."""

    def __init__(self, linkedid: str = "pbx-1700000000.1", start: float = 1_700_000_000.0) -> None:
        self.linkedid = linkedid
        self.now = start
        self.records: list[CelRecord] = []
        self._ids = itertools.count(2)
        self._chan = itertools.count(1)
        self.names: dict[str, str] = {}

    def tick(self, seconds: float = 0.01) -> None:
        self.now += seconds

    def add(
        self, event: str, uniqueid: str, extra: Mapping[str, object] | None = None, /, **f: str
    ) -> None:
        """Append one record ``event`` of channel ``uniqueid`` (``extra`` as its JSON)."""
        self.tick()
        self.records.append(
            CelRecord.build(
                event=event,
                at=self.now,
                uniqueid=uniqueid,
                linkedid=self.linkedid,
                extra=json.dumps(extra) if extra is not None else "",
                seq=len(self.records) + 1,
                channel=self.names.get(uniqueid, ""),
                **f,
            )
        )

    def channel(self, tech_name: str, *, first: bool = False, **f: str) -> str:
        uniqueid = (
            self.linkedid if first else f"{self.linkedid.rsplit('.', 1)[0]}.{next(self._ids)}"
        )
        self.names[uniqueid] = f"{tech_name}-{next(self._chan):08x}"
        self.add("CHAN_START", uniqueid, None, **f)
        return uniqueid

    def answer(self, uniqueid: str) -> None:
        self.add("ANSWER", uniqueid)

    def hangup(
        self, uniqueid: str, *, cause: int = 16, source: str = "", dialstatus: str = ""
    ) -> None:
        self.add(
            "HANGUP",
            uniqueid,
            {"hangupcause": cause, "hangupsource": source, "dialstatus": dialstatus},
        )
        self.add("CHAN_END", uniqueid)

    def end(self) -> None:
        self.add("LINKEDID_END", self.linkedid)

    def name(self, uniqueid: str) -> str:
        return self.names[uniqueid]


def as_ami(record: CelRecord) -> dict[str, str]:
    """The record as cel_manager sends it (``Event: CEL``; EventTime to the second)."""
    from datetime import UTC, datetime

    return {
        "Event": "CEL",
        "Timestamp": f"{record.at:.6f}",
        "EventName": record.event,
        "CallerIDnum": record.cid_num,
        "CallerIDname": record.cid_name,
        "CallerIDdnid": record.cid_dnid,
        "Exten": record.exten,
        "Context": record.context,
        "Channel": record.channel,
        "Application": record.application,
        "AppData": record.appdata,
        "EventTime": datetime.fromtimestamp(record.at, UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "UniqueID": record.uniqueid,
        "LinkedID": record.linkedid,
        "Peer": record.peer,
        "Extra": record.extra_text,
    }


def answered_call() -> Cel:
    """An inbound call that 101 answers and hangs up after 20 s."""
    cel = Cel()
    trunk = cel.channel(
        "PJSIP/pstn", first=True, cid_num="89161234567", exten="74951234567", context="from-pstn"
    )
    phone = cel.channel("PJSIP/101")
    cel.tick(2)
    cel.answer(phone)
    cel.answer(trunk)
    cel.tick(20)
    cel.hangup(phone, source=cel.name(phone))
    cel.hangup(trunk, source=cel.name(phone), dialstatus="ANSWER")
    cel.end()
    return cel


#: The table cel_sqlite3_custom creates for the sandbox's mapping
#: (router/sandbox/conf/cel_sqlite3_custom.conf), as Asterisk 22 wrote it.
SQLITE_SCHEMA = (
    "CREATE TABLE cel (AcctId INTEGER PRIMARY KEY, eventtype,eventtime,cidname,cidnum,cidani,"
    "cidrdnis,ciddnid,context,exten,channame,appname,appdata,amaflags,accountcode,uniqueid,"
    "linkedid,userfield,peer,userdeftype,eventextra)"
)


def write_sqlite(path: str | os.PathLike[str], records: Iterable[CelRecord]) -> None:
    """Store ``records`` as cel_sqlite3_custom does (eventtime as text, Unix seconds)."""
    con = sqlite3.connect(path)
    try:
        con.execute(SQLITE_SCHEMA.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
        con.executemany(
            "INSERT INTO cel (eventtype, eventtime, cidname, cidnum, cidani, cidrdnis, ciddnid, "
            "context, exten, channame, appname, appdata, amaflags, accountcode, uniqueid, "
            "linkedid, userfield, peer, userdeftype, eventextra) "
            "VALUES (?, ?, ?, ?, '', '', ?, ?, ?, ?, ?, ?, '3', '', ?, ?, '', ?, '', ?)",
            [
                (
                    r.event,
                    f"{r.at:.6f}",
                    r.cid_name,
                    r.cid_num,
                    r.cid_dnid,
                    r.context,
                    r.exten,
                    r.channel,
                    r.application,
                    r.appdata,
                    r.uniqueid,
                    r.linkedid,
                    r.peer,
                    r.extra_text,
                )
                for r in records
            ],
        )
        con.commit()
    finally:
        con.close()
