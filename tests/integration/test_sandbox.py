"""The sandbox is a real Asterisk that answers AJAM, with least-privilege users."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from router.sandbox import DEFAULT_SECRET, Sandbox, tmp_on_tmpfs
from tests.integration.conftest import private_secret


def rawman(client: httpx.Client, url: str, **params: str) -> str:
    response = client.post(f"{url}/rawman", data=params)
    assert response.status_code == 200
    return response.text


def login(client: httpx.Client, box: Sandbox, user: str) -> None:
    text = rawman(client, box.url, action="Login", username=user, secret=box.users()[user])
    assert "Response: Success" in text, text
    assert "mansession_id" in client.cookies


def test_admin_pings_over_ajam(sandbox: Sandbox) -> None:
    with httpx.Client(timeout=10) as client:
        login(client, sandbox, "admin")
        text = rawman(client, sandbox.url, action="Ping", ActionID="ping-1")
        assert "Response: Success" in text
        assert "Ping: Pong" in text
        assert "ActionID: ping-1" in text
        rawman(client, sandbox.url, action="Logoff")


def test_wrong_secret_is_refused(sandbox: Sandbox) -> None:
    with httpx.Client(timeout=10) as client:
        text = rawman(client, sandbox.url, action="Login", username="admin", secret="wrong")
        assert "Response: Error" in text
        assert "Authentication failed" in text


def test_a_router_of_another_sandbox_cannot_log_in_to_this_one(
    sandbox: Sandbox, scratch_sandbox: Sandbox
) -> None:
    """Every test sandbox has a secret of its own (conftest.py): a router left
    over from another test, another xdist worker or another run on this host,
    still reconnecting to a port this sandbox took, is refused. With the kit's
    default secret shared by all it could log in, route this sandbox's calls
    with its own rules and, its heartbeat signed with the same key, claim to be
    the live router here (the engines of this sandbox's tests then stand by)."""
    assert sandbox.secret != scratch_sandbox.secret
    for other in (scratch_sandbox.secret, DEFAULT_SECRET):
        with httpx.Client(timeout=10) as client:
            text = rawman(client, sandbox.url, action="Login", username="router", secret=other)
            assert "Authentication failed" in text, text


def test_the_kits_sandbox_of_the_phones_has_a_secret_of_its_own(
    asterisk_sandbox: Sandbox, sandbox: Sandbox
) -> None:
    """The same for router.testing's ``asterisk_sandbox``, the phones' Asterisk
    (and a plugin author's): the kit's default secret is not let in."""
    assert asterisk_sandbox.secret not in (DEFAULT_SECRET, sandbox.secret)
    with httpx.Client(timeout=10) as client:
        text = rawman(
            client, asterisk_sandbox.url, action="Login", username="router", secret=DEFAULT_SECRET
        )
        assert "Authentication failed" in text, text


def test_watcher_may_not_originate(sandbox: Sandbox) -> None:
    with httpx.Client(timeout=10) as client:
        login(client, sandbox, "watcher")
        text = rawman(
            client,
            sandbox.url,
            action="Originate",
            Channel="Local/100@default",
            Application="Wait",
            Data="1",
            Async="true",
        )
        assert "Response: Error" in text
        assert "Message: Permission denied" in text


def test_second_sandbox_runs_alongside(sandbox: Sandbox, scratch_sandbox: Sandbox) -> None:
    assert scratch_sandbox.running
    assert sandbox.running
    assert {scratch_sandbox.http_port, scratch_sandbox.ami_port}.isdisjoint(
        {sandbox.http_port, sandbox.ami_port}
    )
    assert scratch_sandbox.inst != sandbox.inst
    assert "httptimeout = 12" in (scratch_sandbox.inst / "etc" / "manager.conf").read_text()
    for box in (sandbox, scratch_sandbox):
        with httpx.Client(timeout=10) as client:
            login(client, box, "admin")
            assert "Response: Success" in rawman(client, box.url, action="Ping")


def test_sandbox_can_be_restarted(scratch_sandbox: Sandbox) -> None:
    old_pid = scratch_sandbox.pid
    scratch_sandbox.restart()
    assert scratch_sandbox.running
    assert scratch_sandbox.pid != old_pid
    with httpx.Client(timeout=10) as client:
        login(client, scratch_sandbox, "admin")
        assert "Response: Success" in rawman(client, scratch_sandbox.url, action="Ping")


def test_detached_instance_can_be_attached(scratch_sandbox: Sandbox) -> None:
    scratch_sandbox.save_state()
    try:
        again = Sandbox.attach(scratch_sandbox.name, cache_dir=scratch_sandbox.root.parent)
        assert again.url == scratch_sandbox.url
        assert again.pid == scratch_sandbox.pid
        assert "Asterisk" in again.cli("core show version")
        again.stop()
        assert not again.running
        assert not scratch_sandbox.running
    finally:
        scratch_sandbox.forget_state()


def _mount_type(path: Path) -> str | None:
    """The file system type mounted exactly at ``path`` (/proc/mounts), if any."""
    found = None
    for line in Path("/proc/mounts").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[1] == str(path):
            found = fields[2]  # the last mount on a path is the one seen
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_the_roots_tmp_is_a_tmpfs_as_on_debian(scratch_sandbox: Sandbox) -> None:
    """Asterisk writes every AJAM answer through a file in /tmp: starting an
    instance mounts a tmpfs there, as Debian 13 has one at /tmp
    (docs/asterisk-ajam.md), once however many instances start."""
    tmp = scratch_sandbox.root / "tmp"
    # Under the lock the sandbox mounts with: other workers' instances start meanwhile.
    with open(scratch_sandbox.root.parent / ".tmpfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for _ in range(5):  # as a fresh machine has it (lazily: other instances run)
            if _mount_type(tmp) != "tmpfs":
                break
            subprocess.run(["umount", "-l", str(tmp)], capture_output=True, check=False)
        assert _mount_type(tmp) != "tmpfs"
    scratch_sandbox.restart()
    assert _mount_type(tmp) == "tmpfs"
    assert tmp_on_tmpfs(scratch_sandbox.root)  # mounted already: nothing more is mounted
    mounted = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    assert mounted.count(str(tmp)) == 1


def test_a_sip_port_taken_before_asterisk_binds_it_is_chosen_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A UDP port free when chosen and bound by another process before Asterisk
    bound it: Asterisk started without its SIP transport ("Address already in
    use") and the phones never registered (seen in CI). Now the start is tried
    again on fresh ports."""
    import socket

    import router.sandbox as sandbox_module

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    real = sandbox_module.free_udp_port
    chosen = iter([port])
    monkeypatch.setattr(sandbox_module, "free_udp_port", lambda: next(chosen, None) or real())
    box = Sandbox.start(name=f"pytest-{os.getpid()}-taken", secret=private_secret())
    try:
        assert box.sip_port != port
        assert box.bind_failures() != []  # the first try's, kept in the log
        transports = box.cli("pjsip show transports")
        assert f"127.0.0.1:{box.sip_port}" in transports, transports
    finally:
        box.remove()
        taken.close()
