"""systemd's notify protocol, written by hand: READY, WATCHDOG, STATUS, STOPPING.

With ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a Unix datagram
socket; a leading ``@`` names an abstract one) and, with ``WatchdogSec=``,
``WATCHDOG_USEC``. One datagram per message is the whole protocol, so no
systemd library is needed. Without ``NOTIFY_SOCKET`` (not under systemd, or
``Type=exec``) everything here does nothing.

:class:`Notifier` tells systemd ``READY=1`` once the engine serves, then
``WATCHDOG=1`` every half ``WATCHDOG_USEC`` while the engine is alive and
serving: a wedged event loop stops the pings and systemd restarts the
service. Asterisk being away does not stop them (a restart would not bring
Asterisk back); it shows in ``STATUS=``, what ``systemctl status`` prints.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from router.health import Health
from router.tasks import cancel_and_wait

__all__ = ["Notifier", "notify", "watchdog_interval"]

log = logging.getLogger("router.sdnotify")


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (``READY=1``, ``STATUS=...``) to systemd; False when not
    under systemd or the socket refused it (never raises)."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8", "replace"), target)
    except OSError as exc:
        log.debug("sd_notify %r not sent: %s", message, exc)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None.

    ``WATCHDOG_PID``, when set, must be this process: a child that inherited
    the environment must not ping for its parent.
    """
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isascii() or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


class Notifier:
    """READY once, WATCHDOG while alive, STATUS when readiness changes, STOPPING at the end."""

    def __init__(
        self,
        health: Callable[[], Health],
        alive: Callable[[], bool],
        *,
        environ: Mapping[str, str] | None = None,
        status_every: float = 5.0,
    ) -> None:
        self._health = health
        self._alive = alive
        self._environ = dict(os.environ if environ is None else environ)
        self._status_every = status_every
        self._task: asyncio.Task[None] | None = None
        self._status = ""

    @property
    def enabled(self) -> bool:
        return bool(self._environ.get("NOTIFY_SOCKET"))

    def start(self) -> None:
        """``READY=1`` now, then the watchdog and status loop (a task of this loop)."""
        if not self.enabled or self._task is not None:
            return
        self._send_status()
        notify("READY=1", self._environ)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="callrouter-sdnotify")

    def waiting(self, status: str, seconds: float) -> None:
        """Before ``READY=1``: say what the start waits for, and give systemd's
        start timeout ``seconds`` more (``EXTEND_TIMEOUT_USEC``)."""
        if self.enabled and self._task is None:
            usec = int(seconds * 1_000_000)
            notify(f"STATUS={status}\nEXTEND_TIMEOUT_USEC={usec}", self._environ)

    async def stop(self) -> None:
        task, self._task = self._task, None
        try:
            if task is not None:
                await cancel_and_wait(task)  # a cancelled stop() is not swallowed (issue 16)
        finally:
            # Said even when this stop is cancelled (a shutdown cut short): the
            # last word systemd has of the service's state (issue 16).
            if self.enabled:
                notify("STOPPING=1\nSTATUS=stopping: finishing decisions in flight", self._environ)

    async def _run(self) -> None:
        interval = watchdog_interval(self._environ)
        step = min(interval, self._status_every) if interval else self._status_every
        while True:
            await asyncio.sleep(step)
            try:
                self._send_status()
                if interval and self._alive():
                    notify("WATCHDOG=1", self._environ)
            except Exception:  # a bug here must not end the service
                log.exception("sd_notify loop failed; continuing")

    def _send_status(self) -> None:
        line = self._health().status_line().replace("\n", " ")
        if line != self._status:
            self._status = line
            notify(f"STATUS={line}", self._environ)
