"""Files an administrator names are read whole, bounded and never blocking
(router/textfiles.py): rule files, lists, the directory and router.toml.

A FIFO where a file was made each of these reads block for ever (a reload
hung the engine's reload task); a test here that regresses would hang, so
each read runs in a thread, and a writer opened afterwards frees it.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from router import textfiles
from router.builtin.directory import load_directory
from router.config import MAX_CONFIG_BYTES, load_config
from router.errors import ConfigError
from router.rules import Registry, load_rules
from router.textfiles import FileTooBig, read_bounded
from tests.unit.fifo_read import without_blocking


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    os.mkfifo(path)
    return path


def test_a_fifo_is_refused_at_once(fifo: Path) -> None:
    outcome = without_blocking(lambda: read_bounded(fifo, 100), fifo)
    assert isinstance(outcome, OSError)
    assert "not a regular file" in str(outcome.strerror)


def test_a_fifo_named_as_a_rule_file_is_a_located_error(fifo: Path) -> None:
    ruleset = without_blocking(lambda: load_rules([fifo], Registry()), fifo)
    assert not isinstance(ruleset, BaseException), ruleset
    details = [e.detail for e in ruleset.errors]  # type: ignore[attr-defined]
    assert details == ["cannot read rule file: not a regular file (a FIFO, socket or device)"]


def test_a_fifo_named_as_a_list_file_is_a_located_error(tmp_path: Path) -> None:
    fifo = tmp_path / "vip.txt"
    os.mkfifo(fifo)
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nlists:\n  vip: {file: vip.txt}\nrules: []\n", encoding="utf-8")
    ruleset = without_blocking(lambda: load_rules([rules], Registry()), fifo)
    assert not isinstance(ruleset, BaseException), ruleset
    errors = ruleset.errors  # type: ignore[attr-defined]
    assert len(errors) == 1
    assert "not a regular file" in errors[0].detail
    assert errors[0].line == 3


def test_a_fifo_named_as_the_directory_is_a_config_error(tmp_path: Path) -> None:
    fifo = tmp_path / "directory.csv"
    os.mkfifo(fifo)
    outcome = without_blocking(lambda: load_directory(fifo), fifo)
    assert isinstance(outcome, ConfigError)
    assert "directory.csv" in str(outcome)
    assert "not a regular file" in str(outcome)


def test_a_fifo_named_as_router_toml_is_a_config_error(tmp_path: Path) -> None:
    fifo = tmp_path / "router.toml"
    os.mkfifo(fifo)
    outcome = without_blocking(lambda: load_config(fifo), fifo)
    assert isinstance(outcome, ConfigError)
    assert str(outcome).startswith(f"{fifo}: cannot read: not a regular file")


def test_a_settings_file_over_its_bound_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(ConfigError, match=rf"^{path}: \d+ bytes, more than the {MAX_CONFIG_BYTES}"):
        load_config(path)


def test_a_file_that_grew_after_it_was_opened_is_read_no_further_than_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"x" * 5000)
    real_fstat = os.fstat

    def opened_empty(fd: int) -> os.stat_result:  # the size when it was opened
        info = real_fstat(fd)
        return os.stat_result((*info[:6], 0, *info[7:]))

    monkeypatch.setattr(textfiles.os, "fstat", opened_empty)
    with pytest.raises(FileTooBig) as caught:
        read_bounded(path, 1000)
    assert (caught.value.size, caught.value.limit) == (1001, 1000)
    assert read_bounded(path, 5000) == b"x" * 5000


def test_a_fifo_is_refused_without_being_opened(fifo: Path) -> None:
    """Opening a FIFO to read frees a writer waiting for a reader (as opening a
    device may act: /dev/watchdog arms the watchdog): it is refused unopened."""
    opened: list[int] = []
    writer = threading.Thread(target=lambda: opened.append(os.open(fifo, os.O_WRONLY)))
    writer.start()
    try:
        time.sleep(0.2)  # the writer waits in open() for a reader
        with pytest.raises(OSError, match="not a regular file") as caught:
            read_bounded(fifo, 1000)
        assert caught.value.errno == errno.EINVAL
        writer.join(0.3)
        assert not opened, "the FIFO was opened: its waiting writer went on"
    finally:
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # frees the writer
        writer.join(5)
        os.close(reader)
        for fd in opened:
            os.close(fd)


def test_a_file_whose_read_would_wait_is_refused_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc/kmsg is a regular file, size 0, whose read waits for the kernel's
    next message: read without blocking, it says so at once."""
    path = tmp_path / "kmsg"
    path.write_bytes(b"")
    real_read = os.read

    def kernel_file(fd: int, n: int) -> bytes:
        if os.get_blocking(fd):
            raise AssertionError("read_bounded would have waited for ever")
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(textfiles.os, "read", kernel_file)
    with pytest.raises(OSError, match="would wait") as caught:
        read_bounded(path, 1000)
    assert caught.value.errno == errno.EAGAIN
    monkeypatch.setattr(textfiles.os, "read", real_read)
    assert read_bounded(path, 1000) == b""
