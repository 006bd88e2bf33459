"""What a detached sandbox keeps in its instance folder (router/sandbox), and
``python -m router.sandbox start --tls``; no Asterisk is started here: the
configs are written into a bare root and read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.errors import SandboxError
from router.sandbox import Sandbox, free_port
from router.sandbox.__main__ import build_parser, main


def configured(tmp_path: Path, *, tls: bool = True) -> Sandbox:
    box = Sandbox(
        root=tmp_path / "rootfs",
        name="kept",
        http_port=free_port(),
        ami_port=free_port(),
        tls_port=free_port() if tls else None,
        tls_ami_port=free_port() if tls else None,
    )
    box.write_configs()
    box.save_state()
    return box


def manager_conf(box: Sandbox) -> str:
    return (box.inst / "etc" / "manager.conf").read_text(encoding="utf-8")


def test_attach_restores_users_events_tls_ports_and_dialplan(tmp_path: Path) -> None:
    box = configured(tmp_path)
    box.add_manager_user("first", lines=["eventfilter = Event: Newchannel"])
    box.disable_events(["VarSet", "RTCPSent"])
    box.set_dialplan("[extra]\nexten => 1,1,NoOp()\n", reload=False)
    again = Sandbox.attach("kept", cache_dir=tmp_path)
    assert again.extra_users == box.extra_users
    assert again.disabled_events == ("VarSet", "RTCPSent")
    assert (again.tls_port, again.tls_ami_port) == (box.tls_port, box.tls_ami_port)
    assert again.tls_tcp_url == box.tls_tcp_url
    assert again.extra_dialplan == box.extra_dialplan
    assert set(again.users()) == {"admin", "router", "watcher", "first"}


def test_a_user_added_on_an_attached_sandbox_keeps_the_earlier_ones(tmp_path: Path) -> None:
    """Before, attach() forgot the users added by the process that started the
    sandbox, and the next add_manager_user rewrote manager.conf without them."""
    box = configured(tmp_path, tls=False)
    box.add_manager_user("first")
    box.disable_events(["VarSet"])
    Sandbox.attach("kept", cache_dir=tmp_path).add_manager_user("second")
    conf = manager_conf(box)
    assert "[first]" in conf
    assert "[second]" in conf
    assert "disabledevents = VarSet" in conf
    third = Sandbox.attach("kept", cache_dir=tmp_path)
    assert list(third.extra_users) == ["first", "second"]
    assert third.tls_port is None
    with pytest.raises(SandboxError, match="started without tls=True"):
        _ = third.tls_url


def test_a_user_taken_back_leaves_manager_conf_and_the_saved_state(tmp_path: Path) -> None:
    """A live test on the session's shared sandbox adds a user for itself; its
    finalizer takes it back, so the next module finds the users it expects."""
    box = configured(tmp_path, tls=False)
    box.add_manager_user("first")
    box.add_manager_user("second", lines=["eventfilter = Event: Newchannel"])
    box.remove_manager_user("first")
    box.remove_manager_user("never-added")  # nothing to take back
    conf = manager_conf(box)
    assert "[first]" not in conf
    assert "[second]" in conf
    again = Sandbox.attach("kept", cache_dir=tmp_path)
    assert list(again.extra_users) == ["second"]
    assert set(again.users()) == {"admin", "router", "watcher", "second"}
    again.remove_manager_user("second")
    assert "[second]" not in manager_conf(box)
    assert "eventfilter = Event: Newchannel" not in manager_conf(box)


def test_an_instance_without_the_extras_file_attaches_as_before(tmp_path: Path) -> None:
    box = configured(tmp_path, tls=False)
    (box.inst / "sandbox-extras.json").unlink()
    again = Sandbox.attach("kept", cache_dir=tmp_path)
    assert (again.extra_users, again.disabled_events) == ({}, ())
    (box.inst / "sandbox-extras.json").write_text('{"extra_users": []}', encoding="utf-8")
    with pytest.raises(SandboxError, match=r"sandbox-extras\.json is unreadable"):
        Sandbox.attach("kept", cache_dir=tmp_path)


@pytest.mark.parametrize("command", ["start", "run"])
def test_start_and_run_take_tls(command: str) -> None:
    assert build_parser().parse_args([command, "x", "--tls"]).tls is True
    assert build_parser().parse_args([command, "x"]).tls is False


def test_start_tls_starts_a_tls_sandbox_and_prints_where_to_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: dict[str, object] = {}

    def start(**kwargs: object) -> Sandbox:
        asked.update(kwargs)
        return configured(tmp_path, tls=bool(kwargs["tls"]))

    monkeypatch.setattr(Sandbox, "start", start)
    assert main(["--cache", str(tmp_path), "start", "kept", "--tls"]) == 0
    assert asked["tls"] is True
    captured = capsys.readouterr()
    box = Sandbox.attach("kept", cache_dir=tmp_path)
    assert captured.out.strip() == box.url
    assert f"TLS: {box.tls_url} and {box.tls_tcp_url} (trust {box.ca_file})" in captured.err


def test_a_restarted_attached_sandbox_saves_its_new_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Sandbox.attach(name).restart()`` kept the old pid in the state file:
    ``python -m router.sandbox stop NAME`` then said "was not running" and left
    the new Asterisk up (found by a new user's trial)."""
    import subprocess

    import router.sandbox as sandbox_module

    class Started:
        pid = 424242

        def poll(self) -> None:
            return None

    monkeypatch.setattr(sandbox_module, "tmp_on_tmpfs", lambda root: None)
    real = subprocess.Popen

    def popen(args: list[str], *rest: object, **kwargs: object) -> object:
        # Only Asterisk's start is faked; anything else runs as ever.
        if args[:1] == ["chroot"]:
            return Started()
        return real(args, *rest, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(Sandbox, "wait_ready", lambda self, timeout: None)
    monkeypatch.setattr(Sandbox, "index_cel_store", lambda self: True)
    box = configured(tmp_path)
    box.launch()
    assert Sandbox.attach("kept", cache_dir=tmp_path).pid == 424242


def test_status_of_an_unknown_name_exits_3_as_documented(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status NAME`` documents exit 3 when NAME is not running; a name that
    was never started exited 1 with a SandboxError (found by a docs trial), so
    a script polling ``status dev`` for "up" needed a second case."""
    assert main(["--cache", str(tmp_path), "status", "dev"]) == 3
    assert "no sandbox named 'dev'" in capsys.readouterr().err
