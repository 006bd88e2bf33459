"""The state folder is one no other local user can change (issue 16).

callrouter's state files are opened by name (SQLite takes no descriptor), and
``router/aside.py`` looks at a name with ``lstat`` before SQLite opens it: a
user who could write in ``state_dir`` could swap a symbolic link in between
and have callrouter (root, perhaps) write its database where the link
points. ``router/private_dir.py`` refuses such a folder at start, and any
folder on the way to it that another user could move: the window is then
closed for everyone but root and callrouter's own user.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
from collections.abc import Iterable
from pathlib import Path

import pytest

from router.engine import Engine
from router.errors import ConfigError
from router.private_dir import private_dir_problem
from router.testing.builders import make_config
from tests.unit.fifo_read import without_blocking
from tests.unit.stranger import ROOT_ONLY, STRANGER, as_stranger, folder_in_tmp
from tests.unit.test_engine_lifecycle import run_cli, write_run_config


class Accounts:
    """Fake user and group databases (``pwd``, ``grp``): users as (name, uid,
    primary gid), groups as (name, gid, members); any other lookup fails."""

    def __init__(
        self,
        users: Iterable[tuple[str, int, int]],
        groups: Iterable[tuple[str, int, list[str]]],
    ) -> None:
        self.users = [
            pwd.struct_passwd((name, "x", uid, gid, "", "/", "/bin/sh")) for name, uid, gid in users
        ]
        self.groups = [grp.struct_group((name, "x", gid, members)) for name, gid, members in groups]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(pwd, "getpwuid", self.getpwuid)
        monkeypatch.setattr(pwd, "getpwall", lambda: list(self.users))
        monkeypatch.setattr(grp, "getgrgid", self.getgrgid)

    def getpwuid(self, uid: int) -> pwd.struct_passwd:
        for user in self.users:
            if user.pw_uid == uid:
                return user
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    def getgrgid(self, gid: int) -> grp.struct_group:
        for group in self.groups:
            if group.gr_gid == gid:
                return group
        raise KeyError(f"getgrgid(): gid not found: {gid}")


@pytest.fixture
def shared_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every group has a member besides its user: none is private (the real
    root group of a test machine is root's private one, which is accepted)."""

    def getgrgid(gid: int) -> grp.struct_group:
        return grp.struct_group((f"group{gid}", "x", gid, ["someone-else"]))

    monkeypatch.setattr(grp, "getgrgid", getgrgid)


def _private(path: Path) -> Path:
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)  # whatever the umask
    return path


def test_a_private_folder_passes(tmp_path: Path) -> None:
    assert private_dir_problem(_private(tmp_path / "state")) is None


@pytest.mark.parametrize(
    ("mode", "who"),
    [
        (0o777, "its group and every user"),
        (0o702, "every user"),
        (0o770, "its group"),
        # The sticky bit does not help here: a name not yet made (the -wal, a
        # new database) is anyone's to make.
        (0o1777, "its group and every user"),
    ],
)
@pytest.mark.usefixtures("shared_groups")
def test_a_state_folder_others_can_write_in_is_refused(tmp_path: Path, mode: int, who: str) -> None:
    state = _private(tmp_path / "state")
    os.chmod(state, mode)
    assert private_dir_problem(state) == (
        f"{state} is writable by {who} (mode {mode:04o}): another user can put a symbolic "
        f"link where callrouter's state files go and have callrouter write wherever it "
        f"points; run: chmod 700 {state}"
    )


def test_a_folder_on_the_way_others_can_write_in_is_refused(tmp_path: Path) -> None:
    """They could rename the state folder away and put one of theirs in its place."""
    shared = _private(tmp_path / "shared")
    state = _private(shared / "state")
    os.chmod(shared, 0o777)
    problem = private_dir_problem(state)
    assert problem is not None
    assert problem.startswith(
        f"{shared} (on the way to {state}) is writable by its group and every user (mode 0777)"
    )
    assert problem.endswith(f"run: chmod go-w {shared}, or choose another state_dir")


def test_a_sticky_folder_on_the_way_is_fine_when_the_names_in_it_are_ours(
    tmp_path: Path,
) -> None:
    """As /tmp: others add names there but cannot rename or remove ours."""
    shared = _private(tmp_path / "shared")
    state = _private(shared / "state")
    os.chmod(shared, 0o1777)
    assert private_dir_problem(state) is None


@pytest.mark.usefixtures("shared_groups")
def test_a_relative_path_with_dots_and_a_link_is_walked_as_the_kernel_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd's DynamicUser layout: /var/lib/callrouter a link to private/callrouter."""
    real = _private(_private(tmp_path / "private") / "callrouter")
    (tmp_path / "callrouter").symlink_to("private/callrouter")
    monkeypatch.chdir(tmp_path / "private")
    assert private_dir_problem(Path("../callrouter/./")) is None
    os.chmod(real, 0o770)
    problem = private_dir_problem(Path("../callrouter"))
    assert problem is not None
    assert problem.startswith(f"{real} is writable by its group")  # the folder itself named


def test_a_link_into_a_folder_others_can_write_in_is_refused(tmp_path: Path) -> None:
    shared = _private(tmp_path / "shared")
    state = _private(shared / "state")
    os.chmod(shared, 0o777)
    (tmp_path / "link").symlink_to(state)
    problem = private_dir_problem(tmp_path / "link")
    assert problem is not None
    assert problem.startswith(f"{shared} (on the way to {tmp_path / 'link'}) is writable")


def test_a_link_loop_and_a_missing_folder_are_errors(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError, match="Too many levels of symbolic links") as loop:
        private_dir_problem(tmp_path / "a")
    assert loop.value.errno == errno.ELOOP
    with pytest.raises(FileNotFoundError):
        private_dir_problem(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(NotADirectoryError):
        private_dir_problem(tmp_path / "file")


@ROOT_ONLY
def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    state = _private(tmp_path / "state")
    os.chown(state, STRANGER, -1)
    assert private_dir_problem(state) == (
        f"{state} belongs to uid {STRANGER}, not to callrouter's user (uid 0): that user "
        f"can put a symbolic link where callrouter's state files go; run: chown 0 {state} "
        f"&& chmod 700 {state}"
    )
    # ... also as a folder on the way, and as callrouter's user it is fine.
    inner = _private(state / "inner")
    problem = private_dir_problem(inner)
    assert problem is not None
    assert problem == (
        f"{state} (on the way to {inner}) belongs to uid {STRANGER}: that user can move the "
        "folders below it and put their own in their place; choose a state_dir whose folders "
        "belong to root or callrouter's user (uid 0)"
    )
    assert private_dir_problem(inner, me=STRANGER) is None


@ROOT_ONLY
def test_in_a_sticky_folder_a_name_of_another_user_is_refused(tmp_path: Path) -> None:
    """Their link in /tmp (or their folder there) is theirs to change."""
    shared = _private(tmp_path / "shared")
    os.chmod(shared, 0o1777)
    state = _private(tmp_path / "state")
    link = shared / "state"
    link.symlink_to(state)
    os.chown(link, STRANGER, -1, follow_symlinks=False)
    problem = private_dir_problem(link)
    assert problem is not None
    assert problem.startswith(
        f"{link} (on the way to {link}) belongs to uid {STRANGER}, in {shared}, which "
        "others can write in: that user can swap it; choose a state_dir whose folders "
        "belong to root or callrouter's user (uid 0)"
    )
    os.chown(link, 0, -1, follow_symlinks=False)
    assert private_dir_problem(link) is None


@ROOT_ONLY
def test_a_folder_on_the_way_others_may_only_search_is_walked() -> None:
    """A folder mode 0711 (search, no read), as the kernel's lookup passes
    through it: a state folder below it started before the check, which
    opened each folder to read and was refused (EACCES) where the kernel
    only needs to search. Outside tmp_path: pytest's root folder is 0700."""
    with folder_in_tmp("callrouter-search-only-") as base:
        os.chmod(base, 0o711)
        state = base / "state"
        state.mkdir(mode=0o700)
        os.chown(state, STRANGER, STRANGER)
        assert as_stranger(lambda: private_dir_problem(state)) == "None"
        # The check still sees what it must: the folder itself writable by its group.
        os.chmod(state, 0o770)
        said = as_stranger(lambda: private_dir_problem(state))
        assert said.startswith(f"{state} is writable by its group (mode 0770)")


def test_callrouter_run_refuses_a_state_folder_others_can_write_in(tmp_path: Path) -> None:
    """Before touching Asterisk or opening any state file, in one line that says the fix."""
    state = _private(tmp_path / "state")
    os.chmod(state, 0o777)
    config = write_run_config(tmp_path, state)
    run = run_cli("run", "--config", str(config), cwd=tmp_path)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert (
        f"callrouter run: error: {config}:7: [router] state_dir: {state} is writable by its "
        f"group and every user (mode 0777): another user can put a symbolic link where "
        f"callrouter's state files go and have callrouter write wherever it points; run: "
        f"chmod 700 {state} (docs/security.md, Local users and files)"
    ) in run.stderr
    assert "logged in" not in run.stderr
    assert sorted(p.name for p in state.iterdir()) == []  # no state file opened there


def test_the_start_refuses_such_a_folder_before_making_a_file_there(tmp_path: Path) -> None:
    """The start's write probe (``.callrouter-start.PID``) came first: a FIFO
    another user put at that name blocked the start for ever (O_WRONLY waits
    for a reader), and a link there was followed to make the file."""
    state = _private(tmp_path / "state")
    os.chmod(state, 0o777)
    fifo = state / f".callrouter-start.{os.getpid()}"
    os.mkfifo(fifo)
    engine = Engine(make_config(state_dir=state))
    outcome = without_blocking(engine._check_state_dir, fifo, writing=True)
    assert isinstance(outcome, ConfigError)
    assert f"[router] state_dir: {state} is writable by its group and every user" in str(outcome)
    # In a private folder, a FIFO left there is refused, not waited on.
    os.chmod(state, 0o700)
    outcome = without_blocking(engine._check_state_dir, fifo, writing=True)
    assert isinstance(outcome, ConfigError)
    assert f"cannot write in {state}: No such device or address" in str(outcome)


# Debian's user private groups (issue 16): with umask 002 a folder a user makes
# is 0775 (0770), its group that user's own. Accepted only when proven private.


def _group_writable(tmp_path: Path, mode: int = 0o770) -> tuple[Path, int, int]:
    """A state folder of this uid in a group-writable folder of it, both ``mode``:
    the folder, its owner, its group."""
    shared = _private(tmp_path / "home")
    state = _private(shared / "state")
    os.chmod(shared, mode)
    os.chmod(state, mode)
    info = state.stat()
    assert shared.stat().st_gid == info.st_gid
    return state, info.st_uid, info.st_gid


@pytest.mark.parametrize("mode", [0o770, 0o775])
def test_a_folder_writable_by_its_owners_private_group_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    """The group is the user's: same name, the user's primary group, no other
    member, no other user's primary group. As a folder on the way too."""
    state, uid, gid = _group_writable(tmp_path, mode)
    Accounts(
        users=[("svc", uid, gid), ("alice", uid + 1, gid + 1)],
        groups=[("svc", gid, []), ("alice", gid + 1, ["svc"])],
    ).install(monkeypatch)
    assert private_dir_problem(state) is None
    Accounts(users=[("svc", uid, gid)], groups=[("svc", gid, ["svc"])]).install(monkeypatch)
    assert private_dir_problem(state) is None  # the user listed in its own group


@pytest.mark.parametrize(
    ("users", "groups"),
    [
        # Another member in /etc/group.
        ([("svc", 0, 0), ("alice", 1, 1)], [("svc", 0, ["alice"])]),
        # Another user's primary group.
        ([("svc", 0, 0), ("bob", 1, 0)], [("svc", 0, [])]),
        # Not named as the user (a shared group that happens to be primary).
        ([("svc", 0, 0)], [("staff", 0, [])]),
        # Not the user's primary group.
        ([("svc", 0, 1)], [("svc", 0, [])]),
        # Unknown to the databases: not proven.
        ([], []),
        ([("svc", 0, 0)], []),
    ],
    ids=["member", "primary-of-another", "other-name", "not-primary", "no-user", "no-group"],
)
def test_a_folder_writable_by_a_group_not_proven_private_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    users: list[tuple[str, int, int]],
    groups: list[tuple[str, int, list[str]]],
) -> None:
    """Uids and gids are given relative to the folder's owner and group."""
    state, uid, gid = _group_writable(tmp_path)
    Accounts(
        [(name, uid + u, gid + g) for name, u, g in users],
        [(name, gid + g, members) for name, g, members in groups],
    ).install(monkeypatch)
    problem = private_dir_problem(state)
    assert problem is not None
    assert problem.startswith(f"{state.parent} (on the way to {state}) is writable by its group")
    os.chmod(state.parent, 0o700)
    assert private_dir_problem(state) == (
        f"{state} is writable by its group (mode 0770): another user can put a symbolic "
        f"link where callrouter's state files go and have callrouter write wherever it "
        f"points; run: chmod 700 {state}"
    )


def test_a_private_group_does_not_excuse_writes_by_every_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, uid, gid = _group_writable(tmp_path, 0o700)
    os.chmod(state, 0o777)
    Accounts([("svc", uid, gid)], [("svc", gid, [])]).install(monkeypatch)
    problem = private_dir_problem(state)
    assert problem is not None
    assert problem.startswith(f"{state} is writable by its group and every user (mode 0777)")


def test_the_user_database_is_read_once_per_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pwd.getpwall`` lists every account NSS knows (LDAP's, thousands):
    it was read for each trusted user, twice for each group-writable folder on
    the way and again for the state folder; once per check now (issue 16)."""
    state, uid, gid = _group_writable(tmp_path, 0o775)
    deeper = _private(state / "deeper")
    os.chmod(deeper, 0o775)
    accounts = Accounts([("svc", uid, gid), ("alice", uid + 1, gid + 1)], [("svc", gid, [])])
    accounts.install(monkeypatch)
    reads: list[int] = []

    def getpwall() -> list[pwd.struct_passwd]:
        reads.append(1)
        return list(accounts.users)

    monkeypatch.setattr(pwd, "getpwall", getpwall)
    assert private_dir_problem(deeper, me=uid + 1) is None  # root and alice trusted
    assert len(reads) == 1
    # A group that is no trusted user's primary one needs no list at all.
    reads.clear()
    Accounts([("svc", uid, gid + 1)], [("svc", gid, [])]).install(monkeypatch)
    monkeypatch.setattr(pwd, "getpwall", getpwall)
    assert private_dir_problem(deeper) is not None
    assert reads == []
