"""A SIP user agent that sends an ``INVITE`` with a ``Replaces`` header, for the sandbox.

The sandbox's baresip 1.1.0 phones cannot send one: they put ``?Replaces=``
into the request URI, which Asterisk takes for an ordinary call. Phones that
pick up or take over a call (BLF pickup, a supervisor's "steal") do send the
header, and Asterisk 22 answers it for a channel in no bridge by moving that
channel under the new INVITE's channel (``ast_channel_move``), which AMI does
not name (router/recordings/replaced.py). This agent does only what that
needs, over UDP on loopback: the INVITE with digest authentication as one of
the sandbox's endpoints, the ACK, a steady stream of G.711 silence to the
port Asterisk's answer gives (so the moved channel has frames, which a
MixMonitor writes), and the BYE::

    agent = ReplacingAgent(pbx, "104")
    agent.replace("555", call_id, to_tag=local, from_tag=remote)
    ...
    agent.close()  # BYE, then the sockets closed
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

from router.errors import SandboxError

if TYPE_CHECKING:
    from router.sandbox import Sandbox

__all__ = ["ReplacingAgent"]

#: Seconds a SIP answer may take.
ANSWER_TIMEOUT = 5.0
#: One 20 ms PCMU frame of silence (0xFF is mu-law zero).
_SILENCE = b"\xff" * 160


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _header(message: str, name: str) -> str:
    found = re.search(rf"^{name}:[ \t]*(.*)$", message, re.MULTILINE | re.IGNORECASE)
    if found is None:
        raise SandboxError(f"SIP answer without {name}: {message.splitlines()[0]!r}")
    return found.group(1).strip()


class ReplacingAgent:
    """One call placed as endpoint ``user`` (its secret is the sandbox's)."""

    def __init__(self, pbx: Sandbox, user: str) -> None:
        self._pbx, self._user = pbx, user
        self._sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sip.bind(("127.0.0.1", 0))
        self._sip.settimeout(ANSWER_TIMEOUT)
        self._rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._rtp.bind(("127.0.0.1", 0))
        self._port = self._sip.getsockname()[1]
        self._call_id = f"replaces-{secrets.token_hex(8)}"
        self._tag = secrets.token_hex(6)
        self._cseq = 0
        self._target = ""
        self._to = ""
        self._contact = ""
        self._branch = ""
        self._stop = threading.Event()
        self._sender: threading.Thread | None = None

    def replace(self, exten: str, call_id: str, *, to_tag: str, from_tag: str) -> None:
        """INVITE ``exten`` replacing the dialog ``call_id`` (``to_tag``: Asterisk's
        own tag of it, ``from_tag``: the phone's); returns once it is answered and
        the sound flows. Anything but a 200 is a :class:`SandboxError`."""
        self._target = f"sip:{exten}@127.0.0.1:{self._pbx.sip_port}"
        replaces = f"{call_id};to-tag={to_tag};from-tag={from_tag}"
        answer = self._invite(replaces, "")
        code = int(answer.split()[1])
        if code in (401, 407):
            self._ack(answer, self._target)
            answer = self._invite(replaces, self._authorization(answer))
            code = int(answer.split()[1])
        if code != 200:
            self._ack(answer, self._target)
            raise SandboxError(f"INVITE with Replaces answered {answer.splitlines()[0]!r}")
        self._to = _header(answer, "To")
        found = re.search(r"<([^>]+)>", _header(answer, "Contact"))
        self._contact = found.group(1) if found else self._target
        self._ack(answer, self._contact)
        self._start_sound(answer)

    def close(self) -> None:
        """Hang up (a BYE, when the call was answered) and close the sockets."""
        self._stop.set()
        if self._sender is not None:
            self._sender.join(2)
        try:
            if self._to:
                self._cseq += 1
                self._send(
                    f"BYE {self._contact} SIP/2.0\r\n{self._via()}"
                    f"From: <sip:{self._user}@127.0.0.1>;tag={self._tag}\r\nTo: {self._to}\r\n"
                    f"Call-ID: {self._call_id}\r\nCSeq: {self._cseq} BYE\r\n"
                    "Content-Length: 0\r\n\r\n"
                )
                self._final()
        finally:
            self._sip.close()
            self._rtp.close()

    def _via(self) -> str:
        self._branch = f"z9hG4bK{secrets.token_hex(8)}"
        return (
            f"Via: SIP/2.0/UDP 127.0.0.1:{self._port};branch={self._branch};rport\r\n"
            "Max-Forwards: 70\r\n"
        )

    def _invite(self, replaces: str, authorization: str) -> str:
        self._cseq += 1
        rtp_port = self._rtp.getsockname()[1]
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        )
        self._send(
            f"INVITE {self._target} SIP/2.0\r\n{self._via()}"
            f"From: <sip:{self._user}@127.0.0.1>;tag={self._tag}\r\nTo: <{self._target}>\r\n"
            f"Call-ID: {self._call_id}\r\nCSeq: {self._cseq} INVITE\r\n"
            f"Contact: <sip:{self._user}@127.0.0.1:{self._port}>\r\nSupported: replaces\r\n"
            f"Replaces: {replaces}\r\n{authorization}"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
        )
        return self._final()

    def _authorization(self, challenge: str) -> str:
        """The digest answer to Asterisk's ``WWW-Authenticate`` (qop=auth)."""
        fields = dict(re.findall(r'(\w+)="?([^",]+)"?', _header(challenge, "WWW-Authenticate")))
        ha1 = _md5(f"{self._user}:{fields['realm']}:{self._pbx.secret}")
        ha2 = _md5(f"INVITE:{self._target}")
        cnonce = secrets.token_hex(4)
        response = _md5(f"{ha1}:{fields['nonce']}:00000001:{cnonce}:auth:{ha2}")
        return (
            f'Authorization: Digest username="{self._user}", realm="{fields["realm"]}", '
            f'nonce="{fields["nonce"]}", uri="{self._target}", response="{response}", '
            f'opaque="{fields.get("opaque", "")}", cnonce="{cnonce}", qop=auth, nc=00000001, '
            "algorithm=MD5\r\n"
        )

    def _ack(self, answer: str, uri: str) -> None:
        self._send(
            f"ACK {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self._port};branch={self._branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{self._user}@127.0.0.1>;tag={self._tag}\r\n"
            f"To: {_header(answer, 'To')}\r\nCall-ID: {self._call_id}\r\n"
            f"CSeq: {self._cseq} ACK\r\nContent-Length: 0\r\n\r\n"
        )

    def _send(self, message: str) -> None:
        self._sip.sendto(message.encode(), ("127.0.0.1", self._pbx.sip_port))

    def _final(self) -> str:
        """The next final answer to this agent's request (provisional ones skipped)."""
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while time.monotonic() < deadline:
            try:
                data = self._sip.recv(65536)
            except TimeoutError:
                break
            text = data.decode("utf-8", "replace")
            if not text.startswith("SIP/2.0 "):
                continue  # a request of Asterisk's (an OPTIONS): not answered here
            if int(text.split()[1]) >= 200 and self._call_id in text:
                return text
        raise SandboxError(f"no final SIP answer within {ANSWER_TIMEOUT:g} s")

    def _start_sound(self, answer: str) -> None:
        """Silence to the port of Asterisk's SDP, 20 ms a packet, until :meth:`close`."""
        port = re.search(r"^m=audio (\d+) ", answer, re.MULTILINE)
        if port is None:
            raise SandboxError("the 200 OK has no audio port")
        where = ("127.0.0.1", int(port.group(1)))
        ssrc = secrets.randbits(32)

        def send() -> None:
            seq, stamp, due = 0, 0, time.monotonic()
            while not self._stop.is_set():
                packet = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, stamp & 0xFFFFFFFF, ssrc)
                try:
                    self._rtp.sendto(packet + _SILENCE, where)
                except OSError:
                    return
                seq, stamp, due = seq + 1, stamp + 160, due + 0.02
                self._stop.wait(max(0.0, due - time.monotonic()))

        self._sender = threading.Thread(target=send, name="replaces-rtp", daemon=True)
        self._sender.start()
