"""A state folder no other local user can change (issue 16).

callrouter keeps its SQLite files and small state files in ``[router]
state_dir`` and opens them by name: SQLite takes a path, never a descriptor,
and makes its ``-wal``, ``-shm`` and ``-journal`` beside the database by
name too. ``router/aside.py`` moves aside a link, FIFO or folder found at such
a name, but it looks (``lstat``) and SQLite opens afterwards: a user who can
write in the folder could put a symbolic link there in between and have
callrouter write its database (as root, perhaps) wherever the link points.
No check of a file by name closes that window; a folder in which nobody else
can make, rename or remove a name does.

:func:`private_dir_problem` walks the path from ``/`` one name at a time
(``openat`` with ``O_NOFOLLOW``, each folder checked with ``fstat`` on the
descriptor opened, each symbolic link followed by hand): every folder on the
way must belong to root or to callrouter's user, a folder on the way may be
writable by others only with the sticky bit (as ``/tmp``: others can add
names there but not rename or remove ours), and then each name in it (a
folder or a link) must belong to root or callrouter's user too; the state
folder itself must be writable by nobody but its owner. (A link of another
user in a folder only root or callrouter's user may write in is fine: a
link's target never changes, and only they can remove or replace it.) Such a folder
stays so: only root or callrouter's user can change any of it, so the check
holds for the whole run and the files in it can be opened by name.

A folder writable by its group is written by its owner alone when that group
is a private group of root or callrouter's user (Debian's user private
groups, with ``umask 002`` every folder a user makes is ``0775``):
:func:`private_group` proves it from the user and group databases (``pwd``,
``grp``: the group's name is the user's, the user's primary group, no member
but the user, and no other user's primary group). Anything less (a lookup
failing, a member, another user in it) is a group of others, refused as before.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

__all__ = ["MAX_LINKS", "private_dir_problem", "private_group"]

#: Symbolic links followed at most, as the kernel's ``ELOOP`` (40 on Linux).
MAX_LINKS = 40

#: ``O_PATH``: a folder is walked through as the kernel's own lookup does,
#: with search (``x``) permission alone; ``O_RDONLY`` wanted read permission
#: too and refused a path through a folder of mode 0711 (EACCES) that the
#: service itself reaches. ``fstat``, ``openat``, ``fstatat`` and
#: ``readlinkat`` take such a descriptor.
_OPEN_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def private_group(gid: int, uid: int, users: Sequence[pwd.struct_passwd] | None = None) -> bool:
    """Whether group ``gid`` is user ``uid``'s private group, one nobody else is
    in: its name is the user's, it is the user's primary group, it lists no
    member but the user, and no other user has it as primary group (the whole
    user database, ``users`` or ``pwd.getpwall``, as the system's NSS lists
    it). Any lookup that fails (no such user or group) is False: not proven
    private."""
    try:
        user = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except (KeyError, OSError):
        return False
    if user.pw_gid != gid or group.gr_name != user.pw_name:
        return False
    if any(member != user.pw_name for member in group.gr_mem):
        return False
    if users is None:
        try:
            users = pwd.getpwall()
        except OSError:
            return False
    return all(other.pw_gid != gid or other.pw_uid == uid for other in users)


class _Groups:
    """The groups of one check that are a trusted user's private group
    (:func:`private_group`): each group asked about once, the user database
    (``pwd.getpwall``, every account the system's NSS lists: LDAP's too) read
    once at most, not once for every group-writable folder and trusted user
    (issue 16)."""

    def __init__(self, trusted: set[int]) -> None:
        self._trusted = sorted(trusted)
        self._users: list[pwd.struct_passwd] | None = None
        self._private: dict[int, bool] = {}

    def private(self, gid: int) -> bool:
        """Whether ``gid`` is a private group of one of the trusted users."""
        known = self._private.get(gid)
        if known is None:
            known = self._private[gid] = any(self._is_private(gid, uid) for uid in self._trusted)
        return known

    def _is_private(self, gid: int, uid: int) -> bool:
        try:
            user = pwd.getpwuid(uid)
        except (KeyError, OSError):
            return False
        if user.pw_gid != gid:
            return False  # not that user's primary group: no need to list them all
        if self._users is None:
            try:
                self._users = pwd.getpwall()
            except OSError:
                return False
        return private_group(gid, uid, self._users)


def _writers_of(info: os.stat_result, groups: _Groups) -> str | None:
    """Who besides the owner may write in the folder ``info`` describes; None:
    nobody. Its group does not count when it is a private group of a trusted
    user (:func:`private_group`)."""
    writers = _writers(info.st_mode)
    if writers == "its group" and groups.private(info.st_gid):
        return None
    return writers


def _writers(mode: int) -> str | None:
    """Who besides the owner may write in a folder of ``mode``; None: nobody."""
    group, other = bool(mode & stat.S_IWGRP), bool(mode & stat.S_IWOTH)
    if group and other:
        return "its group and every user"
    if other:
        return "every user"
    return "its group" if group else None


def private_dir_problem(
    path: Path, *, me: int | None = None, what: str = "state_dir"
) -> str | None:
    """What lets a local user other than root and ``me`` (callrouter's user,
    the effective uid by default) change what ``path`` holds, as a sentence
    naming the folder and the command that fixes it; None when nobody can.
    ``what`` names the folder in the advice (``choose another state_dir``;
    ``backup folder`` for ``callrouter state backup``'s target, which is no
    state_dir).

    ``path`` must exist and be a folder: ``OSError`` otherwise (as ``open``
    raises it: ``FileNotFoundError``, ``NotADirectoryError``, ``ELOOP`` past
    :data:`MAX_LINKS` links). Relative to the current folder, which is
    walked too. Blocking (file system calls).
    """
    me = os.geteuid() if me is None else me
    trusted = {0, me}
    groups = _Groups(trusted)
    full = PurePosixPath(os.path.join(os.getcwd(), path))
    names = list(full.parts[1:])
    root = os.open("/", _OPEN_DIR)
    try:
        root_stat = os.fstat(root)
    except OSError:
        os.close(root)
        raise
    # The folders walked into, ``/`` first: (descriptor, path shown, its stat).
    stack: list[tuple[int, PurePosixPath, os.stat_result]] = [(root, PurePosixPath("/"), root_stat)]
    links = 0
    try:
        while names:
            name = names.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop()[0])
                continue
            parent_fd, parent, parent_stat = stack[-1]
            # A folder a name is looked up in, checked as one on the way
            # (the last one, the state folder, more strictly below).
            problem = _on_the_way(parent, parent_stat, trusted, groups, me, full, what)
            if problem is not None:
                return problem
            where = parent / name
            info = os.lstat(name, dir_fd=parent_fd)
            if _writers_of(parent_stat, groups) is not None and info.st_uid not in trusted:
                # A folder others write in has the sticky bit (else refused
                # above): only the owner of a name there can rename or remove it.
                return (
                    f"{where} (on the way to {full}) belongs to uid {info.st_uid}, in "
                    f"{parent}, which others can write in: that user can swap it; choose "
                    f"{_a(what)} whose folders belong to root or callrouter's user (uid {me})"
                )
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(full))
                target = PurePosixPath(os.readlink(name, dir_fd=parent_fd))
                if target.is_absolute():
                    while len(stack) > 1:
                        os.close(stack.pop()[0])
                names[:0] = list(target.parts[target.is_absolute() :])
                continue
            fd = os.open(name, _OPEN_DIR, dir_fd=parent_fd)
            try:
                opened = os.fstat(fd)  # the folder opened, not the name looked at
            except OSError:
                os.close(fd)
                raise
            stack.append((fd, where, opened))
        return _the_folder(stack[-1][1], stack[-1][2], trusted, groups, me, what)
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _a(what: str) -> str:
    """``what`` with its article: ``a state_dir``, ``a backup folder``."""
    return f"a {what}"


def _files(what: str) -> str:
    """What the folder ``what`` names holds, for the messages."""
    return "callrouter's state files" if what == "state_dir" else f"the {what}'s files"


def _on_the_way(
    where: PurePosixPath,
    info: os.stat_result,
    trusted: set[int],
    groups: _Groups,
    me: int,
    full: PurePosixPath,
    what: str,
) -> str | None:
    """A folder walked through: root's or ``me``'s, others' writes only under the sticky bit."""
    if info.st_uid not in trusted:
        return (
            f"{where} (on the way to {full}) belongs to uid {info.st_uid}: that user can "
            f"move the folders below it and put their own in their place; choose "
            f"{_a(what)} whose folders belong to root or callrouter's user (uid {me})"
        )
    writers = _writers_of(info, groups)
    if writers is not None and not info.st_mode & stat.S_ISVTX:
        return (
            f"{where} (on the way to {full}) is writable by {writers} "
            f"(mode {stat.S_IMODE(info.st_mode):04o}): another user can move the folders "
            f"below it and put their own in their place; run: chmod go-w {where}, or "
            f"choose another {what}"
        )
    return None


def _the_folder(
    where: PurePosixPath,
    info: os.stat_result,
    trusted: set[int],
    groups: _Groups,
    me: int,
    what: str,
) -> str | None:
    """The state folder itself: root's or ``me``'s, nobody else may write in it."""
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in trusted:
        return (
            f"{where} belongs to uid {info.st_uid}, not to callrouter's user (uid {me}): "
            f"that user can put a symbolic link where {_files(what)} go; "
            f"run: chown {me} {where} && chmod 700 {where}"
        )
    writers = _writers_of(info, groups)
    if writers is not None:
        return (
            f"{where} is writable by {writers} (mode {mode:04o}): another user can put a "
            f"symbolic link where {_files(what)} go and have callrouter write "
            f"wherever it points; run: chmod 700 {where}"
        )
    return None
