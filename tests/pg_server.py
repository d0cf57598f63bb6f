"""A real PostgreSQL server for tests: ``initdb`` into a temporary directory, ``postgres`` on a free 127.0.0.1 port.

PostgreSQL refuses to run as root; the test suite runs as root in CI, so the cluster then belongs to the ``postgres``
system user (Debian's package creates it) and every server process runs as that user (``subprocess`` switches user
before it executes). The server listens on loopback TCP only (no Unix socket) and authenticates with a password
(SCRAM), as a production install does. Readiness is the server's own log line, read from its standard error: no
polling, no sleeps. :meth:`PostgresServer.stop` and :meth:`PostgresServer.start` bring it down and back on the same
port and data directory (a restart keeps every committed row).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import psycopg

from sim.broker import free_port

__all__ = ["PostgresFailedError", "PostgresServer", "PostgresUnavailableError", "postgres_bin_dir"]

_READY = "database system is ready to accept connections"
_SUPERUSER = "carehub"


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL's server binaries are not installed (or there is no user to run them as): tests skip."""


class PostgresFailedError(RuntimeError):
    """PostgreSQL is installed but the cluster could not be created or started: tests fail."""


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding ``postgres`` and ``initdb``, ``None`` if there is none."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")]
    usable = [d for d in found if (d / "initdb").is_file()]
    return max(usable, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0) if usable else None


class PostgresServer:
    """One PostgreSQL cluster and its server process, restartable on the same port.

    Use as ``with PostgresServer() as server`` (initdb and start; stop and remove on exit).
    """

    def __init__(self, *, startup_timeout_s: float = 60.0) -> None:
        bindir = postgres_bin_dir()
        if bindir is None:
            raise PostgresUnavailableError("PostgreSQL is not installed (scripts/test installs Debian's postgresql)")
        self.bindir = bindir
        self.host = "127.0.0.1"
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.startup_timeout_s = startup_timeout_s
        self._user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailableError(
                    "running as root and there is no postgres user to run the server"
                ) from None
            self._user = "postgres"
        self.root = Path(tempfile.mkdtemp(prefix="carehub-pg-"))
        self.datadir = self.root / "data"
        self.log_path = self.root / "server.log"
        self._proc: subprocess.Popen[str] | None = None
        self._drain: threading.Thread | None = None
        self._databases = 0

    def __enter__(self) -> Self:
        try:
            self.initdb()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            shutil.chown(path, self._user, self._user)

    def initdb(self) -> None:
        """Create the cluster (superuser ``carehub`` with :attr:`password`, UTF-8, SCRAM over TCP)."""
        self._chown(self.root)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        done = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                _SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user=self._user,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise PostgresFailedError(f"initdb failed ({done.returncode}): {done.stderr.strip()}")

    @property
    def running(self) -> bool:
        """Whether the server process is up."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and return once it logged that it accepts connections.

        Raises:
            PostgresFailedError: it exited, or did not become ready within the startup timeout.
        """
        if self.running:
            return
        proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.datadir),
                "-p",
                str(self.port),
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
                "-c",
                "logging_collector=off",
                "-c",
                "log_destination=stderr",
            ],
            user=self._user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "LC_ALL": "C"},
        )
        assert proc.stderr is not None
        ready = threading.Event()
        self._drain = threading.Thread(
            target=self._read_log, args=(proc.stderr, ready), name=f"postgres-log:{self.port}", daemon=True
        )
        self._drain.start()
        if not ready.wait(self.startup_timeout_s) or proc.poll() is not None:
            proc.kill()
            proc.wait()
            tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:] if self.log_path.exists() else ""
            raise PostgresFailedError(f"postgres did not become ready (exit {proc.returncode}): {tail.strip()}")
        self._proc = proc

    def _read_log(self, stream: IO[str], ready: threading.Event) -> None:
        with self.log_path.open("a", encoding="utf-8") as log:
            for line in stream:
                log.write(line)
                log.flush()
                if _READY in line:
                    ready.set()
        ready.set()  # the server exited: wake the starter, which sees it gone

    def stop(self, *, immediate: bool = False) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, write a checkpoint) and wait for it to exit; with
        ``immediate``, ``pg_ctl stop -m immediate`` (SIGQUIT: every backend quits at once, no checkpoint, the next
        :meth:`start` runs crash recovery)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._drain is not None:
            self._drain.join()
            self._drain = None

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends exit once they notice); the next :meth:`start` runs crash recovery."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if self._drain is not None:
            self._drain.join()
            self._drain = None

    def close(self) -> None:
        """Stop the server and remove its files."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        """A ``postgresql://`` URL for ``database`` as the superuser (with another password if given)."""
        secret = self.password if password is None else password
        return f"postgresql://{_SUPERUSER}:{secret}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database (``t1``, ``t2``...); returns its URL."""
        self._databases += 1
        name = f"t{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
