"""Real SIP phones for the sandbox Asterisk: one baresip user agent per extension.

Everything after a redirect (a phone ringing, answered, busy, transferred, hung
up) only means something against real SIP, so the sandbox runs Debian's
baresip (``baresip-core``, installed into the sandbox root by
:func:`router.sandbox.ensure_rootfs`) the way it runs Asterisk: chrooted into
the cached root, one process per user agent, each with its own config folder
under the instance folder (``<inst>/phones/<name>``) and its own loopback ports.
The phones register as the PJSIP endpoints 101-105 of the sandbox's
``pjsip.conf``; a "PSTN" user agent registers as the trunk endpoint ``pstn`` and
both places calls into the shipped ``callrouter-inbound`` context and answers
calls dialled out through the trunk (as the customer)::

    with Phones.start(pbx, extensions=("101", "102", "103")) as phones:
        phones["101"].mode = "busy"
        call = phones.pstn.call(did="74951234567", caller="8 (916) 123-45-67")
        call.wait_answered(10)
        call.hangup()
        print(phones["102"].calls[-1].talk_seconds)

Each user agent is driven over baresip's ``ctrl_tcp`` module (netstring-framed
JSON commands and events); a thread per agent reads its events, so the API is
synchronous and every wait is bounded. A failure raises
:class:`~router.errors.SandboxError` with the agent's log tail.

What this version of baresip (1.1.0) can and cannot do decided how some parts
work; each is explained where it is done:

* **busy** must answer ``486 Busy Here`` at once, before any ``180 Ringing``.
  baresip sends 180 as it accepts an INVITE; the only 486 it sends before that
  is its call limit (``call_max_calls``, 2). A busy phone therefore really is
  busy: it holds two calls from a private account straight to the PSTN-side
  agent's ``hold`` account (auto-answer), never through Asterisk, so no channel,
  CEL record or history exists for them. (A call from a phone to itself would
  put both legs, with one Call-ID, into one process, where baresip's commands
  find a call by its Call-ID.)
* **No ring tones.** baresip 1.1.0 crashes now and then when a call is answered
  while its ring tone plays (``ring.wav``, a thread torn down under the main
  loop); the phones' ``audio_path`` is an empty folder, so nothing ever rings
  locally.
* **Crashes.** The ring tone's crash above and the hold's below (**Transfers**)
  were one race in baresip 1.1.0's ``aufile`` player (fixed upstream in 2.0.0):
  its thread marks itself running only once it runs, so a player stopped right
  after it started is freed under it and the thread calls a null write handler.
  Dialling while a call was held hit it every time. The phones therefore play
  into an ``aubridge`` device nothing reads, and baresip's ``sndfile`` filter
  writes what they hear; dialling while a call is held no longer crashes
  (tests/integration/test_phones.py). Whatever crashes still leave a core: each
  baresip runs in its own folder with core dumps allowed, and
  :meth:`Phone.crash_report` adds gdb's backtrace of it to the log tail and
  names a known cause (router.sandbox.crash).
* **dnd** is baresip's own do-not-disturb: ``480 Temporarily Unavailable`` at
  once, which Asterisk's Dial reports as ``NOANSWER`` (without any ringing). 480
  rather than 603 Decline because 480 is what phones send for do-not-disturb
  ("the user is not taking calls now"), while 603 says a person refused this
  one call, which a DND phone never shows anyone.
* **Transfers** are REFER. ``/transfer`` in baresip 1.1.0 always refers the
  agent's newest call and writes the ``Refer-To`` as given, so an attended
  transfer places its consultation call from a second account of the same
  phone (Asterisk identifies it as the same endpoint by its auth username) and
  then refers the original call to ``<target>?Replaces=<consultation dialog>``;
  the dialog's tags are read from Asterisk (``CHANNEL(pjsip,local_tag)``) since
  baresip does not expose them. The original call is not put on hold first:
  Asterisk does not need the hold (it used to crash baresip 1.1.0 when the
  phone then dialled; no more, see **Crashes**).
* **Caller numbers** from the PSTN side are written into the SIP ``From`` user
  as given, percent-escaped where SIP requires it (``8 (916) 123-45-67`` is
  sent as ``8%20(916)%20123-45-67``). Asterisk's PJSIP unescapes the user part,
  so ``CALLERID(num)`` in the dialplan is the raw text with its spaces and
  brackets, exactly as a real trunk can deliver it (unlike Originate, whose
  CallerID Asterisk squeezes).
* **Sound.** A phone sends a steady sub-audible 10 Hz wave when nothing is
  playing (baresip's ``ausine`` cannot make silence, and a finite WAV source
  would end the call when the file ends); :meth:`Phone.play` mixes a WAV file
  into what the phone sends once a call is up (``mixausrc``), replacing that
  wave until the file ends. :func:`tone_wav` makes the known test tone.
  What a phone hears is written to ``<inst>/phones/<name>/dump-<time>-dec.wav``
  (:attr:`Phone.heard_path`) by baresip's sndfile filter; no aufile player is
  used (see **Crashes**).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import wave
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, get_args

from router.errors import SandboxError
from router.sandbox import _proc_start, crash
from router.sandbox import stop_phone_orphans as stop_orphans
from router.sandbox.ports import listen_port, rtp_ports

if TYPE_CHECKING:
    from router.sandbox import Sandbox

__all__ = [
    "EXTENSIONS",
    "TONE_HZ",
    "Mode",
    "Phone",
    "PhoneCall",
    "Phones",
    "PstnCall",
    "PstnPhone",
    "stop_orphans",
    "tone_share",
    "tone_wav",
]

Mode = Literal["answer", "busy", "noanswer", "dnd"]
MODES: tuple[str, ...] = get_args(Mode)
#: The extensions with a PJSIP endpoint in the sandbox's pjsip.conf.
EXTENSIONS = ("101", "102", "103", "104", "105")
#: The frequency of :func:`tone_wav`'s default tone.
TONE_HZ = 1000
#: Binary inside the sandbox root.
BARESIP = "/usr/bin/baresip"
#: How long any single step (a command, a registration, a call state) may take.
STEP_TIMEOUT = 10.0
#: How long one ctrl_tcp command may take. It answers in milliseconds; only a
#: machine stalled by other work (tests share two cores) takes seconds.
COMMAND_TIMEOUT = 30.0
#: How long a query (a command that changes nothing, ``/reginfo``) waits on one
#: control connection before it connects again and asks once more: CI saw
#: baresip read a ``/reginfo``, print its answer to its own log and never send
#: it on the connection (35 tests skipped for one phone's start).
QUERY_TRY_TIMEOUT = 10.0
#: The wave a phone sends when nothing plays: ausine's lowest frequency, far
#: below any tone a test looks for.
IDLE_WAVE_HZ = 10
#: The largest command ctrl_tcp takes (its buffer is 1024 bytes).
MAX_COMMAND = 1000
#: What :attr:`Phone.heard_path` names before a phone heard anything (no such file).
HEARD_NONE = "dump-none-dec.wav"
#: SIP URI user characters sent as they are; everything else is %-escaped.
_USER_SAFE = "-_.!~*'()+"


def tone_wav(
    path: Path,
    *,
    hz: float = TONE_HZ,
    seconds: float = 2.0,
    rate: int = 8000,
    amplitude: float = 0.5,
) -> Path:
    """Write a sine tone as a mono 16-bit WAV (G.711's rate by default) and return ``path``.

    Made here rather than shipped or downloaded, so a test knows exactly which
    frequency to look for in a recording.
    """
    if not 0 < amplitude <= 1 or hz <= 0 or seconds <= 0 or rate <= 0:
        raise ValueError("tone_wav: hz, seconds and rate must be > 0, amplitude in (0, 1]")
    frames = round(seconds * rate)
    peak = amplitude * 32767
    data = b"".join(
        struct.pack("<h", round(peak * math.sin(2 * math.pi * hz * i / rate)))
        for i in range(frames)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(data)
    return path


def tone_share(path: Path, hz: float = TONE_HZ) -> float:
    """How much of a mono 16-bit WAV's energy is at ``hz`` (0 to about 1; Goertzel).

    A recording or :attr:`Phone.heard_path` that carries :func:`tone_wav`'s tone
    scores near 1 over the tone's stretch, silence and other sounds near 0.
    """
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{path}: need mono 16-bit PCM")
        rate = wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    samples = struct.unpack(f"<{len(raw) // 2}h", raw[: len(raw) // 2 * 2])
    if not samples:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    energy = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2, s1 = s1, s0
        energy += x * x
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    if energy == 0:
        return 0.0
    return float(power / (len(samples) / 2 * energy))


def _free_sip_port() -> int:
    """A UDP port P with TCP P and P+1 free too: baresip 1.1.0 always listens on
    UDP and TCP at P and TLS at P+1, and fails to start if any is taken. Below
    the ephemeral range, like every port the sandbox listens on
    (:mod:`router.sandbox.ports`)."""
    return listen_port(socket.SOCK_DGRAM, also=((0, socket.SOCK_STREAM), (1, socket.SOCK_STREAM)))


def escape_user(number: str) -> str:
    """A caller number as a SIP URI user part: spaces and the like %-escaped (UTF-8)."""
    return urllib.parse.quote(number, safe=_USER_SAFE)


def _uri_user(uri: str) -> str:
    """``sip:8%20(916)...@127.0.0.1:5060`` -> ``8 (916)...``; the text as given if no user."""
    rest = uri.split(":", 1)[1] if uri.lower().startswith(("sip:", "sips:")) else uri
    user = rest.split("@", 1)[0] if "@" in rest else rest
    return urllib.parse.unquote(user.split(";", 1)[0])


# -- calls ------------------------------------------------------------------------


@dataclass
class PhoneCall:
    """One call as a user agent saw it (times are the host's ``time.time()``).

    ``remote`` is the other side as the SIP URI user shows it (``"102"``, the
    DID, the caller's raw number); ``reason`` is baresip's closing reason
    (``"Connection reset by peer"`` for a BYE, ``"486 Busy Here"`` ...).
    """

    id: str
    direction: Literal["in", "out"]
    remote: str
    started_at: float
    ringing_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    reason: str | None = None
    _owner: Phone | None = field(default=None, repr=False, compare=False)

    @property
    def talk_seconds(self) -> float | None:
        """Answered to hung up, as this agent saw it; None if never answered or not over."""
        if self.answered_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.answered_at

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def wait_answered(self, timeout: float = STEP_TIMEOUT) -> PhoneCall:
        """Block until the call is up; SandboxError if it ends first or the time runs out."""
        owner = self._require_owner()
        owner._wait(
            lambda: self.answered_at is not None or self.ended_at is not None,
            timeout,
            f"call {self.id} ({self.direction}, {self.remote}) to be answered",
        )
        if self.answered_at is None:
            raise SandboxError(
                f"{owner.name}: call {self.id} to {self.remote} ended unanswered "
                f"({self.reason})\n{owner.log_tail()}"
            )
        return self

    def wait_ended(self, timeout: float = STEP_TIMEOUT) -> PhoneCall:
        """Block until the call is over (either side hung up)."""
        self._require_owner()._wait(
            lambda: self.ended_at is not None, timeout, f"call {self.id} to end"
        )
        return self

    def hangup(self) -> None:
        """Hang this call up from this agent's side (BYE, CANCEL or a 486 if ringing)."""
        owner = self._require_owner()
        if self.ended_at is None:
            owner.command("hangup", self.id, check=False)

    def _require_owner(self) -> Phone:
        if self._owner is None:
            raise SandboxError(f"call {self.id} belongs to no running phone")
        return self._owner


#: What the PSTN side's calls are called in the agreed API.
PstnCall = PhoneCall


# -- ctrl_tcp ----------------------------------------------------------------------


class _PortTaken(Exception):
    """A port chosen for baresip was taken before it bound it: choose again."""


class _Control:
    """One ctrl_tcp connection: commands with tokens, events to a callback.

    The wire is netstrings (``12:{"a": true},``) carrying JSON; a response
    carries the token of its command, an event carries ``"event": true``.
    """

    def __init__(self, port: int, on_event: Callable[[dict[str, object]], None], name: str):
        self.name = name
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=STEP_TIMEOUT)
        self._sock.settimeout(None)
        self._on_event = on_event
        self._tokens = itertools.count(1)
        self._responses: dict[str, dict[str, object]] = {}
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self.closed = False
        #: Why the reader stopped, if it stopped on bad input.
        self.error: str | None = None
        self._thread = threading.Thread(target=self._read, name=f"baresip-{name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    colon = buf.find(b":")
                    if colon < 0:
                        break
                    length = int(buf[:colon])
                    end = colon + 1 + length
                    if len(buf) < end + 1:
                        break
                    payload = buf[colon + 1 : end]
                    buf = buf[end + 1 :]
                    self._dispatch(json.loads(payload.decode("utf-8", errors="replace")))
        except (OSError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc} (buffer {buf[:200]!r})"
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def _dispatch(self, message: dict[str, object]) -> None:
        if message.get("response") is True:
            with self._cond:
                self._responses[str(message.get("token"))] = message
                self._cond.notify_all()
        elif message.get("event"):
            self._on_event(message)

    def send(self, command: str, params: str | None, timeout: float) -> dict[str, object]:
        token = str(next(self._tokens))
        body: dict[str, str] = {"command": command, "token": token}
        if params is not None:
            body["params"] = params
        data = json.dumps(body).encode()
        if len(data) > MAX_COMMAND:
            raise SandboxError(f"{self.name}: command {command!r} too long for baresip")
        with self._send_lock:
            try:
                self._sock.sendall(b"%d:%s," % (len(data), data))
            except OSError as exc:
                raise SandboxError(f"{self.name}: baresip's control socket: {exc}") from exc
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    raise SandboxError(
                        f"{self.name}: no answer to /{command} {params or ''} "
                        f"within {timeout:.0f} s"
                        + (
                            f" (control socket closed: {self.error or 'end of stream'})"
                            if self.closed
                            else ""
                        )
                    )
                self._cond.wait(left)
            return self._responses.pop(token)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(2)


# -- one user agent ----------------------------------------------------------------


class Phone:
    """One baresip process: a phone registered as PJSIP endpoint ``name``.

    Accounts, in baresip's order (``/dial ... <index>`` picks one):
    0 the phone itself (registers); 1 its second line for consultation calls
    (same auth user, not registered); 2 ``hold-<name>``, a private account that
    only calls the PSTN side's ``hold`` account directly to make the phone busy.
    """

    #: Index of the account that places consultation calls.
    LINE2 = 1
    HOLD = 2

    def __init__(self, pbx: Sandbox, name: str, *, answer_delay: float = 0.0) -> None:
        self.pbx = pbx
        self.name = name
        #: Seconds a phone in "answer" mode rings before it answers.
        self.answer_delay = answer_delay
        self.folder_in_root = f"{pbx.inst_in_root}/phones/{name}"
        self.folder = pbx.root / self.folder_in_root.lstrip("/")
        self.sip_port = _free_sip_port()
        self.ctrl_port = listen_port(socket.SOCK_STREAM)
        self.registrar = f"127.0.0.1:{pbx.sip_port}"
        self.aor = f"sip:{self.sip_user}@{self.registrar}"
        self.process: subprocess.Popen[bytes] | None = None
        #: When the current baresip was started (epoch seconds): cores older are not its.
        self.started_at = 0.0
        self._ctrl: _Control | None = None
        self._cond = threading.Condition()
        self._calls: dict[str, PhoneCall] = {}
        self._order: list[PhoneCall] = []
        #: Calls of the private hold account: id -> "up" once established.
        self._hold_ids: dict[str, str] = {}
        #: Where busy mode's hold calls go (the PSTN side's ``hold`` account).
        self.hold_target: str | None = None
        self._unbound: list[str] = []
        self._dial_lock = threading.Lock()
        self._mode: Mode = "answer"
        self._play: str | None = None
        self._timers: list[threading.Timer] = []
        #: The last events, for error messages: (type, id, direction, account).
        self.recent: deque[tuple[str, str, str, str]] = deque(maxlen=40)

    # -- configuration --------------------------------------------------------------

    @property
    def sip_user(self) -> str:
        return self.name

    def accounts(self) -> list[str]:
        secret = self.pbx.secret
        return [
            f"<{self.aor}>;auth_pass={secret};regint=300;answermode=manual",
            # Same user, a different AOR string: baresip keeps it as a second
            # agent whose calls Asterisk still puts on endpoint `name`.
            f"<{self.aor};transport=udp>;auth_user={self.sip_user};auth_pass={secret};"
            "regint=0;answermode=manual",
            f"<sip:hold-{self.name}@127.0.0.1:{self.sip_port}>;regint=0;answermode=auto",
        ]

    def write_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "sounds").mkdir(exist_ok=True)
        rtp_start, rtp_end = rtp_ports()
        config = f"""\
# baresip for sandbox phone {self.name} (router/sandbox/phones.py)
poll_method epoll
sip_listen 127.0.0.1:{self.sip_port}
net_interface 127.0.0.1
call_local_timeout 300
# 2: a call plus a consultation call; a busy phone fills both with hold calls.
call_max_calls 2
# baresip would put the other call on hold whenever a call comes up: a re-INVITE
# of the busy phone's call with itself can hang baresip 1.1.0. Holds are explicit.
call_hold_other_calls no
# No aufile player (router.sandbox.crash.KNOWN_CRASHES): the player is a device
# of aubridge that nothing reads, and the sndfile filter writes what the phone
# hears (dump-<time>-dec.wav) and sends (-enc) into this folder.
audio_player aubridge,heard
audio_source ausine,{IDLE_WAVE_HZ}
# ausine makes 48 kHz only; baresip resamples to the codec's 8 kHz.
ausrc_srate 48000
ausrc_channels 1
audio_alert aubridge,alert
snd_path {self.folder_in_root}
rtp_ports {rtp_start}-{rtp_end}
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module aubridge.so
module sndfile.so
module ausine.so
module mixausrc.so
module_app account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}
# no call status line every 100 ms in the log; no ring tones (see the module doc)
statmode_default off
ringback_disabled yes
audio_path {self.folder_in_root}/sounds
"""
        (self.folder / "config").write_text(config, encoding="utf-8")
        (self.folder / "accounts").write_text("\n".join(self.accounts()) + "\n", encoding="utf-8")
        (self.folder / "contacts").write_text("", encoding="utf-8")

    @property
    def log_path(self) -> Path:
        return self.folder / "baresip.log"

    @property
    def heard_path(self) -> Path:
        """What this phone heard in its latest call (8 kHz mono WAV; see :func:`tone_share`).

        baresip's sndfile filter names its files by the second they opened
        (``dump-2026-12-05-14-02-11-dec.wav``), one for each time a call's audio
        started; the newest is the latest call's. Read it once the call ended:
        the WAV header gets its length when baresip closes the file.
        """
        dumps = []
        for path in self.folder.glob("dump-*-dec.wav"):
            with contextlib.suppress(OSError):
                dumps.append((path.stat().st_mtime, path.name, path))
        return max(dumps)[2] if dumps else self.folder / HEARD_NONE

    @property
    def pid_path(self) -> Path:
        return self.folder / "pid"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        return f"--- {self.log_path} (last {lines} lines)\n" + "\n".join(text[-lines:])

    @property
    def crashed(self) -> str | None:
        """``SIGSEGV`` when this phone's baresip died of that signal, else None."""
        code = self.process.poll() if self.process is not None else None
        return crash.signal_name(code)

    def crash_report(self, lines: int = 40) -> str:
        """The log tail of a phone whose baresip died of a signal, and the
        backtrace of its core (router.sandbox.crash); just the log tail otherwise."""
        report = self.log_tail(lines)
        if self.process is None:
            return report
        mortem = crash.post_mortem(
            root=self.pbx.root,
            binary_in_root=BARESIP,
            folder=self.folder,
            since=self.started_at,
            code=self.process.poll(),
        )
        return f"{report}\n{mortem}" if mortem else report

    # -- life cycle ------------------------------------------------------------------

    def launch(self) -> None:
        """Start baresip and connect to its control port (bounded).

        The ports were free when chosen, but another process may bind one
        before baresip does (several test sessions start phones at once): then
        baresip exits, or the control port answers for another baresip, and
        the launch is tried again on fresh ports.
        """
        problem = ""
        for attempt in range(3):
            if attempt:
                self.sip_port = _free_sip_port()
                self.ctrl_port = listen_port(socket.SOCK_STREAM)
            try:
                self._launch_once()
                return
            except _PortTaken as exc:
                problem = str(exc)
                self.stop()
        raise SandboxError(
            f"baresip for {self.name} found no free ports in 3 tries: {problem}\n{self.log_tail()}"
        )

    def _launch_once(self) -> None:
        self.write_config()
        log = open(self.log_path, "wb")  # noqa: SIM115 - lives with the process
        try:
            crash.set_aside(self.folder)
            self.started_at = time.time()
            # sh execs baresip in the phone's folder with cores allowed
            # (router.sandbox.crash): a crash leaves a core to read there.
            script = crash.launch_script()
            self.process = subprocess.Popen(
                [
                    "chroot",
                    str(self.pbx.root),
                    "/bin/sh",
                    "-c",
                    script,
                    "baresip",
                    self.folder_in_root,
                    BARESIP,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        # chroot and sh exec baresip: this pid is baresip's, and the sandbox kills it by
        # this file if the Phones object never gets to (router.sandbox.Sandbox.stop).
        # With its start time: a recycled pid is never taken for it.
        started = _proc_start(self.process.pid)
        self.pid_path.write_text(
            f"{self.process.pid} {started}\n" if started is not None else f"{self.process.pid}\n",
            encoding="utf-8",
        )
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                if "Address already in use" in self.log_tail():
                    raise _PortTaken(f"a port of {self.sip_port}/{self.ctrl_port} was taken")
                raise SandboxError(
                    f"baresip for {self.name} exited with {self.process.returncode} "
                    f"while starting\n{self.log_tail()}"
                )
            try:
                self._ctrl = _Control(self.ctrl_port, self._on_event, self.name)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise SandboxError(
                        f"baresip for {self.name} did not open its control port "
                        f"{self.ctrl_port} within {STEP_TIMEOUT:.0f} s\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)
        self._check_own()

    def _check_own(self) -> None:
        """Its own accounts name its own SIP port: a foreign baresip's would not.
        Asked as :meth:`_query` asks: baresip, still running, may close its
        control connection right after it opened (seen in CI: the start failed
        on "control socket closed" while the phone had registered)."""
        accounts = str(self._query("reginfo").get("data", ""))
        if f"@127.0.0.1:{self.sip_port}" not in accounts:
            raise _PortTaken(f"control port {self.ctrl_port} answered for another baresip")

    def wait_registered(self, timeout: float = STEP_TIMEOUT) -> None:
        """Until baresip reports its registration with Asterisk as 200 OK."""
        deadline = time.monotonic() + timeout
        while True:
            data = str(self._query("reginfo").get("data", ""))
            line = next((ln for ln in data.splitlines() if self.aor.split(":", 1)[1] in ln), "")
            if "OK" in re.sub(r"\x1b\[[0-9;]*m", " ", line).split():
                return
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"{self.name} did not register with Asterisk at {self.registrar} "
                    f"within {timeout:.0f} s: {line or data!r}\n{self.log_tail()}"
                )
            time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop baresip (SIGTERM, then SIGKILL); unregistering is not waited for."""
        for timer in self._timers:
            timer.cancel()
        if self._ctrl is not None:
            self._ctrl.close()
            self._ctrl = None
        if self.process is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self.process.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(3)
        self.pid_path.unlink(missing_ok=True)

    # -- commands -------------------------------------------------------------------

    def _query(self, command: str) -> dict[str, object]:
        """A command that changes nothing (``reginfo``): if baresip, still running,
        closed its control connection, or left the question unanswered for
        :data:`QUERY_TRY_TIMEOUT`, connect again and ask once more. Seen in CI:
        the connection closed between two ``/reginfo`` of a start while baresip
        went on (its registration was 200 OK); and a ``/reginfo`` whose answer
        baresip printed to its log, not to the connection. Commands that act
        (``/dial``, ``/accept``) are never repeated this way."""
        try:
            return self.command(command, timeout=QUERY_TRY_TIMEOUT)
        except SandboxError:
            ctrl = self._ctrl
            if ctrl is None or not self.running:
                raise
        ctrl.close()
        self._ctrl = _Control(self.ctrl_port, self._on_event, self.name)
        return self.command(command)

    def command(
        self,
        command: str,
        params: str | None = None,
        *,
        check: bool = True,
        timeout: float | None = None,
    ) -> dict[str, object]:
        """Run one baresip command (``/help`` lists them); SandboxError if it fails
        or is not answered within ``timeout`` (None: :data:`COMMAND_TIMEOUT`)."""
        if self._ctrl is None:
            raise SandboxError(f"phone {self.name} is not running")
        try:
            reply = self._ctrl.send(
                command, params, COMMAND_TIMEOUT if timeout is None else timeout
            )
        except SandboxError as exc:
            alive = "running" if self.running else "exited"
            raise SandboxError(f"{exc} (baresip {alive})\n{self.log_tail()}") from exc
        if check and reply.get("ok") is not True:
            raise SandboxError(
                f"{self.name}: /{command} {params or ''} failed: {reply.get('data')!r}\n"
                + self.log_tail()
            )
        return reply

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Until ``predicate``; a baresip that died (it has crashed under load, SIGSEGV)
        can tell nothing more, so that ends the wait at once, not at the timeout."""
        start = time.monotonic()
        deadline = start + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                exited = self.process is not None and self.process.poll() is not None
                if left <= 0 or exited:
                    events = "\n".join(" ".join(e) for e in self.recent)
                    if self._ctrl is not None and self._ctrl.error:
                        events += f"\ncontrol connection failed: {self._ctrl.error}"
                    if self.process is not None and self.process.poll() is not None:
                        events += f"\nbaresip exited with {self.process.returncode}"
                    waited = time.monotonic() - start
                    raise SandboxError(
                        f"{self.name}: waited {waited:.0f} s of {timeout:.0f} s for {what}\n"
                        f"--- its last events\n{events}\n{self.log_tail()}"
                    )
                self._cond.wait(min(left, 0.5))

    # -- modes -------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """How the phone treats an incoming call; switchable at run time.

        ``answer``: rings (180) and answers after :attr:`answer_delay` seconds.
        ``busy``: ``486 Busy Here`` at once, no 180 (Dial's DIALSTATUS BUSY).
        ``noanswer``: rings (180) until the caller gives up (DIALSTATUS NOANSWER
        after Dial's timeout). ``dnd``: ``480 Temporarily Unavailable`` at once,
        no 180, as a phone's do-not-disturb key does (DIALSTATUS NOANSWER at
        once; 603 Decline would say a person refused this one call).
        """
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"phone mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == self._mode:
            return
        if self._mode == "dnd":
            self.command("dnd", "false")
        if self._mode == "busy":
            self._release_hold()
        if mode == "dnd":
            self.command("dnd", "true")
        if mode == "busy":
            self._take_hold()
        self._mode = mode

    def _take_hold(self) -> None:
        """Fill the call limit with two calls to the PSTN side's ``hold`` (see the module doc)."""
        if self.hold_target is None:
            raise SandboxError(f"{self.name}: busy mode needs the PSTN side (Phones.start)")
        # The hold calls need both free slots; a call just hung up on the other
        # side may still be closing here.
        self._wait(
            lambda: all(c.ended for c in self._order),
            STEP_TIMEOUT,
            "its calls to end before it can be made busy",
        )
        with self._dial_lock:
            for _ in range(2):
                before = set(self._hold_ids)
                self.command("dial", f"{self.hold_target} {self.HOLD}")
                self._wait(
                    lambda before=before: any(  # type: ignore[misc]
                        state == "up" for cid, state in self._hold_ids.items() if cid not in before
                    ),
                    STEP_TIMEOUT,
                    "its hold call (busy mode) to be up",
                )

    def _release_hold(self) -> None:
        for call_id in list(self._hold_ids):
            self.command("hangup", call_id, check=False)
        self._wait(lambda: not self._hold_ids, STEP_TIMEOUT, "its hold calls to end")

    # -- events ----------------------------------------------------------------------

    def _on_event(self, event: Mapping[str, object]) -> None:
        kind = str(event.get("type", ""))
        call_id = event.get("id")
        self.recent.append(
            (kind, str(call_id), str(event.get("direction")), str(event.get("accountaor")))
        )
        if event.get("class") != "call" or not isinstance(call_id, str):
            return
        now = time.time()
        aor = str(event.get("accountaor", ""))
        outgoing = event.get("direction") == "outgoing"
        with self._cond:
            if aor.startswith("sip:hold"):
                self._hold_event(kind, call_id)
                self._cond.notify_all()
                return
            call = self._calls.get(call_id)
            if call is None:
                call = PhoneCall(
                    id=call_id,
                    direction="out" if outgoing else "in",
                    remote=_uri_user(str(event.get("peeruri", ""))),
                    started_at=now,
                    _owner=self,
                )
                self._calls[call_id] = call
                self._order.append(call)
                if outgoing:
                    self._unbound.append(call_id)
            if kind in ("CALL_RINGING", "CALL_INCOMING", "CALL_PROGRESS"):
                call.ringing_at = call.ringing_at or now
            elif kind == "CALL_ESTABLISHED":
                call.answered_at = call.answered_at or now
                if self._play is not None:
                    self._start_timer(0.0, self._mix, call_id)
            elif kind == "CALL_CLOSED":
                call.ended_at = now
                call.reason = str(event.get("param", "")) or None
            self._cond.notify_all()
        if kind == "CALL_INCOMING":
            self._incoming(call_id)

    def _hold_event(self, kind: str, call_id: str) -> None:
        if kind == "CALL_CLOSED":
            self._hold_ids.pop(call_id, None)
        elif kind == "CALL_ESTABLISHED":
            self._hold_ids[call_id] = "up"
        else:
            self._hold_ids.setdefault(call_id, "starting")

    def _incoming(self, call_id: str) -> None:
        mode = self._mode
        if mode == "answer":
            self._start_timer(self.answer_delay, self._accept, call_id)
        elif mode in ("busy", "dnd"):
            # Only reachable if a call raced the mode switch: refuse it all the same.
            self._start_timer(0.0, self._reject, call_id)

    def _start_timer(self, delay: float, func: Callable[[str], None], call_id: str) -> None:
        timer = threading.Timer(delay, func, (call_id,))
        timer.daemon = True
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _accept(self, call_id: str) -> None:
        with contextlib.suppress(SandboxError):
            if self._mode == "answer" and not self._calls[call_id].ended:
                self.command("accept", call_id, check=False)

    def _reject(self, call_id: str) -> None:
        with contextlib.suppress(SandboxError):
            self.command("hangup", call_id, check=False)

    def _mix(self, call_id: str) -> None:
        play = self._play
        if play is None:
            return
        with contextlib.suppress(SandboxError):
            self.command("callfind", call_id, check=False)
            # module, file, volume of the phone's own source while playing, of the file
            self.command("mixausrc_enc_start", f"aufile {play} 0 100", check=False)

    # -- what a phone does -------------------------------------------------------------

    @property
    def calls(self) -> list[PhoneCall]:
        """Every call this agent saw, oldest first (a snapshot)."""
        with self._cond:
            return list(self._order)

    def relaunch(self) -> None:
        """Start baresip again (after it died), registered, in "answer" mode, no calls."""
        self.stop()
        with self._cond:
            self._mode = "answer"
            self._hold_ids.clear()
        self.launch()
        self.wait_registered()

    def reset(self) -> None:
        """Back to "answer", nothing playing, no calls (hangs up any left).

        A phone whose baresip died is started again, so one crash does not
        fail every later test of a session.
        """
        if not self.running:
            self.relaunch()
        self.mode = "answer"
        self._play = None
        for call in self.calls:
            call.hangup()
        with contextlib.suppress(SandboxError):
            self._wait(lambda: all(c.ended for c in self._order), STEP_TIMEOUT, "calls to end")
        # A session's calls would fill the disk with their sound (16 KB/s a way).
        for dump in self.folder.glob("dump-*.wav"):
            dump.unlink(missing_ok=True)
        with self._cond:
            self._calls.clear()
            self._order.clear()
            self._unbound.clear()

    def play(self, path: Path | str | None) -> None:
        """Send this WAV file (8 kHz mono 16-bit) whenever a call is up; None stops.

        The file is copied into the phone's folder inside the sandbox root, and
        starts at once if a call is up now.
        """
        if path is None:
            self._play = None
            return
        source = Path(path)
        if not source.is_file():
            raise SandboxError(f"{self.name}: cannot play {source}: no such file")
        target = self.folder / f"play-{source.name}"
        shutil.copyfile(source, target)
        self._play = f"{self.folder_in_root}/{target.name}"
        for call in self.calls:
            if call.answered and not call.ended:
                self._mix(call.id)

    def dial(self, number: str, *, line: int = 0, timeout: float = STEP_TIMEOUT) -> PhoneCall:
        """Call ``number`` through Asterisk (an extension, 600, 700, an outside number).

        Returns as soon as baresip reports the call (ringing, answered or closed).
        """
        uri = number if number.startswith("sip:") else f"sip:{escape_user(number)}@{self.registrar}"
        return self._dial(uri, line, timeout)

    def _dial(self, uri: str, line: int, timeout: float) -> PhoneCall:
        with self._dial_lock:
            with self._cond:
                self._unbound.clear()
            self.command("dial", f"{uri} {line}")
            self._wait(lambda: bool(self._unbound), timeout, f"the call to {uri} to start")
            with self._cond:
                return self._calls[self._unbound.pop(0)]

    def current(self, timeout: float = STEP_TIMEOUT) -> PhoneCall:
        """The call that is up now (the newest one), waiting up to ``timeout`` s for one.

        The other side may see a call answered a moment before this phone's
        own event arrives, hence the wait.
        """

        def up() -> PhoneCall | None:
            return next((c for c in reversed(self._order) if c.answered and not c.ended), None)

        self._wait(lambda: up() is not None, timeout, "a call to be up")
        with self._cond:
            found = up()
        if found is None:  # hung up in between
            raise SandboxError(f"{self.name} has no call up")
        return found

    def hangup(self, call: PhoneCall | None = None) -> None:
        """Hang up ``call``, or every call of this phone that is not over."""
        for each in [call] if call is not None else self.calls:
            each.hangup()

    def blind_transfer(self, target: str, call: PhoneCall | None = None) -> None:
        """REFER the call that is up (or ``call``) to ``target`` without asking first."""
        call = call or self.current()
        self.command("callfind", call.id)
        self.command("transfer", f"sip:{escape_user(target)}@{self.registrar}")

    def attended_transfer(
        self, target: str, call: PhoneCall | None = None, *, talk: float = 0.5
    ) -> PhoneCall:
        """Consult ``target`` (call it, wait for its answer, talk ``talk`` s), then
        REFER the original call to it with Replaces; returns the consultation call.
        """
        call = call or self.current()
        # No /hold first: Asterisk does not need it (module doc, Transfers).
        consult = self.dial(target, line=self.LINE2)
        consult.wait_answered(STEP_TIMEOUT)
        time.sleep(talk)
        self.complete_transfer(call, consult, target)
        return consult

    def complete_transfer(self, call: PhoneCall, consult: PhoneCall, target: str) -> None:
        """REFER ``call`` to ``target`` with Replaces of the ``consult`` dialog: the second
        half of :meth:`attended_transfer`, for a test that acts between the two (starts
        a recording on the consultation call)."""
        local_tag, remote_tag = _asterisk_dialog_tags(self.pbx, consult.id)
        replaces = urllib.parse.quote(
            f"{consult.id};to-tag={local_tag};from-tag={remote_tag}", safe=""
        )
        self.command("callfind", call.id)
        self.command("transfer", f"sip:{escape_user(target)}@{self.registrar}?Replaces={replaces}")


class PstnPhone(Phone):
    """The outside world: registers as the trunk ``pstn`` and calls in with any number.

    Accounts: 0 ``pstn`` (registers, so Asterisk can dial out to it), 1
    ``customer`` (unregistered; baresip hands it every call whose request user
    matches no account, i.e. every number Asterisk dials out), 2 ``hold``
    (answers the busy phones' hold calls at once), then one per caller number
    used, created on first use (``/uanew``).
    """

    def __init__(self, pbx: Sandbox) -> None:
        super().__init__(pbx, "pstn")
        self._callers: dict[str, int] = {}

    def accounts(self) -> list[str]:
        secret = self.pbx.secret
        return [
            f"<{self.aor}>;auth_pass={secret};regint=300;answermode=manual",
            f"<sip:customer@127.0.0.1:{self.sip_port}>;regint=0;answermode=manual",
            f"<sip:hold@127.0.0.1:{self.sip_port}>;regint=0;answermode=auto",
        ]

    def relaunch(self) -> None:
        self._callers.clear()  # the agents made by /uanew died with the process
        super().relaunch()

    # The customer's line has no call limit (every busy phone's hold calls end
    # here), so "busy" refuses each call as it comes: 486 after a 180, as a
    # busy line behind a carrier may. DND, noanswer and answer work as for phones.
    def _take_hold(self) -> None:
        pass

    def _release_hold(self) -> None:
        pass

    @property
    def hold_uri(self) -> str:
        return f"sip:hold@127.0.0.1:{self.sip_port}"

    def write_config(self) -> None:
        super().write_config()
        # Any number of calls: every busy phone holds two calls here.
        path = self.folder / "config"
        text = path.read_text(encoding="utf-8").replace("call_max_calls 2", "call_max_calls 0")
        path.write_text(text, encoding="utf-8")

    def _caller_line(self, caller: str) -> int:
        """The account index whose From user is ``caller`` (made on first use)."""
        if caller not in self._callers:
            index = len(self.accounts()) + len(self._callers)
            aor = f"sip:{escape_user(caller)}@{self.registrar}"
            self.command(
                "uanew",
                f"<{aor}>;auth_user=pstn;auth_pass={self.pbx.secret};regint=0;answermode=manual",
            )
            self._callers[caller] = index
        return self._callers[caller]

    def call(self, did: str, caller: str, *, timeout: float = STEP_TIMEOUT) -> PhoneCall:
        """Call the company number ``did`` from ``caller``, written as people write it.

        The call enters the shipped ``callrouter-inbound`` context with ``EXTEN``
        = ``did`` and ``CALLERID(num)`` = ``caller`` exactly (see the module doc).
        """
        if not did or not all(ch.isdigit() or ch in "+*#" for ch in did):
            raise ValueError(f"did must be digits, not {did!r}")
        if not caller or len(caller) > 80:
            raise ValueError(f"caller must be 1 to 80 characters, not {caller!r}")
        line = self._caller_line(caller)
        return self._dial(f"sip:{did}@{self.registrar}", line, timeout)


def _asterisk_dialog_tags(pbx: Sandbox, sip_call_id: str) -> tuple[str, str]:
    """Asterisk's (local, remote) tags of the PJSIP channel whose dialog is ``sip_call_id``."""
    ami = _Rawman(pbx)
    for channel in ami.channels():
        if not channel.startswith("PJSIP/"):
            continue
        if ami.getvar(channel, "CHANNEL(pjsip,call-id)") == sip_call_id:
            return (
                ami.getvar(channel, "CHANNEL(pjsip,local_tag)"),
                ami.getvar(channel, "CHANNEL(pjsip,remote_tag)"),
            )
    raise SandboxError(f"no Asterisk channel has the SIP dialog {sip_call_id}")


class _Rawman:
    """A few synchronous AMI actions over the sandbox's AJAM ``rawman`` (admin user)."""

    def __init__(self, pbx: Sandbox) -> None:
        self.url = pbx.url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        self.send("Login", Username="admin", Secret=pbx.secret)

    def send(self, action: str, **params: str) -> list[dict[str, str]]:
        query = urllib.parse.urlencode({"Action": action, **params})
        try:
            with self.opener.open(f"{self.url}/rawman?{query}", timeout=STEP_TIMEOUT) as resp:
                text = resp.read().decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            raise SandboxError(f"AJAM {action} on {self.url}: {exc}") from exc
        blocks = []
        for block in text.replace("\r\n", "\n").split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if fields:
                blocks.append(fields)
        if not blocks or blocks[0].get("Response") not in ("Success", "Follows"):
            raise SandboxError(f"AJAM {action}: {blocks[:1]}")
        return blocks

    def channels(self) -> list[str]:
        return [
            b["Channel"]
            for b in self.send("CoreShowChannels")
            if b.get("Event") == "CoreShowChannel" and "Channel" in b
        ]

    def getvar(self, channel: str, variable: str) -> str:
        return self.send("Getvar", Channel=channel, Variable=variable)[0].get("Value", "")


# -- the set of phones ----------------------------------------------------------------


class Phones:
    """The sandbox's phones: ``phones["101"]`` and ``phones.pstn``; a context manager."""

    def __init__(self, pbx: Sandbox, phones: Mapping[str, Phone], pstn: PstnPhone) -> None:
        self.pbx = pbx
        self._phones = dict(phones)
        self.pstn = pstn

    @classmethod
    def start(
        cls,
        pbx: Sandbox,
        *,
        extensions: Iterable[str] = ("101", "102", "103"),
        answer_delay: float = 0.0,
    ) -> Phones:
        """Start and register a phone per extension and the PSTN side (about a second)."""
        if not pbx.sip_port:
            raise SandboxError(
                f"sandbox {pbx.name!r} has no SIP port (started before phones existed): restart it"
            )
        if not (pbx.root / BARESIP.lstrip("/")).exists():
            raise SandboxError(
                f"the sandbox root {pbx.root} has no baresip (it was provisioned before "
                "the phones): run `sudo make sandbox` once to add it"
            )
        names = list(dict.fromkeys(extensions))
        unknown = [n for n in names if n not in EXTENSIONS]
        if unknown:
            raise SandboxError(
                f"no PJSIP endpoint for {', '.join(unknown)} in the sandbox "
                f"(phones exist for {', '.join(EXTENSIONS)})"
            )
        pstn = PstnPhone(pbx)
        phones = {n: Phone(pbx, n, answer_delay=answer_delay) for n in names}
        started: list[Phone] = []
        try:
            for agent in [pstn, *phones.values()]:
                agent.hold_target = pstn.hold_uri  # known once the PSTN side has its port
                agent.launch()
                started.append(agent)
            for agent in started:
                agent.wait_registered()
        except BaseException:
            for agent in started:
                agent.stop()
            raise
        return cls(pbx, phones, pstn)

    def __getitem__(self, name: str) -> Phone:
        try:
            return self._phones[name]
        except KeyError:
            raise KeyError(
                f"no phone {name!r} started (started: {', '.join(self._phones)})"
            ) from None

    def __iter__(self) -> Iterator[Phone]:
        return iter(self._phones.values())

    @property
    def all(self) -> list[Phone]:
        """Every agent, the PSTN side last."""
        return [*self._phones.values(), self.pstn]

    def reset(self) -> None:
        """Every phone back to "answer", no calls (what the ``phones`` fixture does per test)."""
        self.pstn.reset()  # first: a PSTN side started again may have a new port
        for phone in self._phones.values():
            phone.hold_target = self.pstn.hold_uri
            phone.reset()

    def stop(self) -> None:
        for agent in self.all:
            agent.stop()

    def __enter__(self) -> Phones:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
