"""A throwaway PostgreSQL on loopback, for the CEL store of a remote Asterisk.

callrouter reads CEL that ``cel_pgsql`` writes (``[history] cel =
"postgresql://..."``, docs/history.md). The tests run Debian's ``postgresql``
package (installed by ``make setup``) as a private cluster in a temporary
folder on a free loopback port, and the sandbox Asterisk writes into it::

    with Postgres.start(folder) as pg:
        pg.create_cel_table()
        pg.attach(pbx)        # cel_pgsql.conf in the instance, module loaded
        print(pg.dsn)         # postgresql://postgres@127.0.0.1:PORT/postgres

The server refuses to run as root, so as root it runs as the ``postgres`` user
the package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from router.errors import SandboxError

__all__ = ["CEL_TABLE", "Postgres", "find_bin"]

#: cel_pgsql's columns (it fills the ones it finds by name); text where the
#: stock schema has varchar, so no value is cut.
CEL_TABLE = """CREATE TABLE IF NOT EXISTS cel (
  id serial PRIMARY KEY, eventtype text NOT NULL, eventtime timestamp NOT NULL,
  userdeftype text NOT NULL DEFAULT '', cid_name text NOT NULL DEFAULT '',
  cid_num text NOT NULL DEFAULT '', cid_ani text NOT NULL DEFAULT '',
  cid_rdnis text NOT NULL DEFAULT '', cid_dnid text NOT NULL DEFAULT '',
  exten text NOT NULL DEFAULT '', context text NOT NULL DEFAULT '',
  channame text NOT NULL DEFAULT '', appname text NOT NULL DEFAULT '',
  appdata text NOT NULL DEFAULT '', amaflags integer NOT NULL DEFAULT 0,
  accountcode text NOT NULL DEFAULT '', peeraccount text NOT NULL DEFAULT '',
  uniqueid text NOT NULL DEFAULT '', linkedid text NOT NULL DEFAULT '',
  userfield text NOT NULL DEFAULT '', peer text NOT NULL DEFAULT '',
  extra text NOT NULL DEFAULT ''
)"""


def find_bin(name: str) -> Path | None:
    """A PostgreSQL server program (``initdb``, ``pg_ctl``) from Debian's layout or PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return Path(found[-1])
    on_path = shutil.which(name)
    return Path(on_path) if on_path else None


@dataclass
class Postgres:
    """One running cluster in ``folder``; a context manager that stops it."""

    folder: Path
    port: int
    user: str | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls, folder: Path) -> Postgres:
        from router.sandbox import free_port

        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise SandboxError(
                "PostgreSQL is not installed (make setup installs Debian's postgresql)"
            )
        folder.mkdir(parents=True, exist_ok=True)
        user = "postgres" if os.geteuid() == 0 else None
        if user is not None:
            try:
                entry = pwd.getpwnam(user)
            except KeyError as exc:
                raise SandboxError("running as root needs the 'postgres' user") from exc
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        pg = cls(folder, free_port(), user)
        pg._run([str(initdb), "-D", str(folder / "data"), "-A", "trust", "-U", "postgres"])
        options = f"-c listen_addresses=127.0.0.1 -p {pg.port} -k {folder} -c fsync=off"
        pg._run([str(pg_ctl), "-D", str(folder / "data"), "-o", options,
                 "-l", str(folder / "server.log"), "-w", "-t", "60", "start"])  # fmt: skip
        return pg

    def _run(self, cmd: list[str]) -> None:
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise SandboxError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-800:]}")

    def execute(self, sql: str) -> None:
        import psycopg  # type: ignore[import-not-found, unused-ignore]

        with psycopg.connect(self.dsn, autocommit=True) as con:
            con.execute(sql)

    def create_cel_table(self) -> None:
        self.execute(CEL_TABLE)

    def attach(self, pbx: object) -> None:
        """Make the sandbox Asterisk ``pbx`` write CEL here too (cel_pgsql, UTC times)."""
        inst = pbx.inst  # type: ignore[attr-defined]
        (inst / "etc" / "cel_pgsql.conf").write_text(
            f"[global]\nhostname = 127.0.0.1\nport = {self.port}\ndbname = postgres\n"
            "user = postgres\npassword = unused\ntable = cel\nusegmtime = yes\n",
            encoding="utf-8",
        )
        pbx.cli("module load cel_pgsql.so")  # type: ignore[attr-defined]

    def stop(self) -> None:
        pg_ctl = find_bin("pg_ctl")
        if pg_ctl is not None:
            with contextlib.suppress(SandboxError, subprocess.TimeoutExpired):
                self._run([str(pg_ctl), "-D", str(self.folder / "data"), "-m", "immediate", "stop"])

    def __enter__(self) -> Postgres:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
