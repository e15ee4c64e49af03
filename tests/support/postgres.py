"""A real PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temp dir, on loopback.

For the read models' DuckLake catalog in PostgreSQL (``SHOPSTREAM_LAKE_CATALOG=postgres:``).
The server binaries come from PATH or Debian's ``/usr/lib/postgresql/<major>/bin``
(``apt-get install postgresql``; ``scripts/test.sh`` does it). PostgreSQL refuses to run as
root, so as root the server runs as the ``postgres`` OS user (Debian's package creates it)
through ``runuser``, in a folder that user owns. Clients log in with a password over TCP
(``scram-sha-256``), like a deployed catalog; each test gets a database of its own.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shopstream.brokers.base import free_port

OS_USER = "postgres"
"""Who runs the server when the tests run as root."""


def _bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def unavailable_reason() -> str | None:
    """Why no PostgreSQL server can be started here, or None if one can."""
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        return "no PostgreSQL server binaries (initdb, pg_ctl) - apt-get install postgresql"
    if shutil.which("psql") is None:
        return "no `psql` - apt-get install postgresql-client"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return f"running as root and there is no `{OS_USER}` OS user to run PostgreSQL"
        if shutil.which("runuser") is None:
            return "running as root and there is no `runuser` to drop privileges"
    return None


@dataclass
class PostgresServer:
    """A running server; :meth:`stop` ends it and deletes every file it wrote."""

    root: Path
    bin_dir: Path
    port: int
    password: str
    user: str = "postgres"
    host: str = "127.0.0.1"

    def dsn(self, dbname: str) -> str:
        """A libpq key/value connection string, what ``postgres:`` catalogs take."""
        return (
            f"dbname={dbname} host={self.host} port={self.port} user={self.user} "
            f"password={self.password}"
        )

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        result = subprocess.run(
            ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", self.host,
             "-p", str(self.port), "-U", self.user, "-d", dbname, "-c", sql],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PGPASSWORD": self.password},
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """Create database ``name`` (letters, digits, underscores); return its DSN."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self) -> None:
        _run_as_owner(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast",
             "-w", "stop"], check=False,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


def _run_as_owner(command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        command = ["runuser", "-u", OS_USER, "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(command)}` failed: {(result.stdout + result.stderr).strip()[-800:]}"
        )
    return result


def start_postgres() -> PostgresServer:
    """Initialise and start a server on a free loopback port; returns once it accepts
    connections. Raises RuntimeError with the server's own words if it cannot."""
    bin_dir = _bin_dir()
    assert bin_dir is not None, unavailable_reason()
    # Not under pytest's tmp_path: its folders are private to the user running pytest,
    # and the server may run as another one.
    root = Path(tempfile.mkdtemp(prefix="shopstream-pg-"))
    password = secrets.token_hex(12)
    (root / "pwfile").write_text(password + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam(OS_USER)
        for path in (root, root / "pwfile"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    server = PostgresServer(root, bin_dir, port, password)
    try:
        _run_as_owner([
            str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "postgres",
            "--pwfile", str(root / "pwfile"), "--auth-host=scram-sha-256",
            "--auth-local=peer", "-E", "UTF8", "--no-instructions",
        ])  # fmt: skip
        options = (
            f"-c listen_addresses={server.host} -p {port} -k {root} "
            # A test server: durability across power loss is not what is tested here.
            "-c fsync=off -c max_connections=60"
        )
        _run_as_owner([
            str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log"),
            "-o", options, "-w", "-t", "60", "start",
        ])  # fmt: skip
    except BaseException:
        log = root / "server.log"
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        server.stop()
        if tail:
            raise RuntimeError(f"PostgreSQL did not start: {tail}") from None
        raise
    return server
