"""A throwaway PostgreSQL server on 127.0.0.1 for tests: `initdb` + `pg_ctl` in a temporary folder.

Uses Debian's `postgresql` package binaries (/usr/lib/postgresql/<version>/bin) or any `pg_ctl` on
PATH. initdb refuses to run as root, so under root every server command runs as the `postgres`
user (`runuser`), in a folder that user owns. Password authentication (scram) over TCP only, with a
random password, so the tests exercise the same kind of URL a pipeline uses.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_SERVER_USER = "postgres"


def find_pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl (newest Debian version first), or None if not installed."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version(p.parent.name),
                        reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class PostgresServer:
    """A running server: connect with `url` (database `optuna`, user `optuna`)."""

    url: str
    port: int
    password: str
    data_dir: Path
    #: pg_ctl, and the command prefix it runs under (runuser as root).
    pg_ctl: Path = Path("pg_ctl")
    run_as: tuple[str, ...] = ()


@contextmanager
def postgres_server(*, database: str = "optuna", user: str = "optuna") -> Iterator[PostgresServer]:
    """Start a fresh server, yield it, stop it and delete its files.

    Raises:
        FileNotFoundError: no PostgreSQL binaries (install Debian's `postgresql` package).
        RuntimeError: initdb or pg_ctl failed (their output is in the message).
    """
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise FileNotFoundError("no initdb/pg_ctl under /usr/lib/postgresql/*/bin or on PATH")
    as_root = os.geteuid() == 0
    prefix: list[str] = ["runuser", "-u", _SERVER_USER, "--"] if as_root else []
    # Not pytest's tmp_path: it lives under a root-only folder the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="fer-mtl-pg-"))
    data_dir, socket_dir = root / "data", root / "sock"
    password = secrets.token_urlsafe(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    socket_dir.mkdir()
    if as_root:
        try:
            entry = pwd.getpwnam(_SERVER_USER)
        except KeyError:
            raise RuntimeError(f"running as root needs a {_SERVER_USER!r} user to run the server as "
                               "(Debian's postgresql package creates it)") from None
        for path in (root, socket_dir, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(root, 0o700)
    port = _free_port()

    def run(args: list[str]) -> None:
        proc = subprocess.run(prefix + args, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")

    started = False
    try:
        run([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", user, f"--pwfile={pwfile}",
             "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--no-sync"])
        # fsync off: a test database need not survive a power cut, and it saves seconds per commit batch.
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {socket_dir} -c fsync=off "
                   "-c synchronous_commit=off -c max_connections=50")
        run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(root / "server.log"), "-o", options,
             "-w", "-t", "60", "start"])
        started = True
        url = f"postgresql://{user}:{password}@127.0.0.1:{port}/postgres"
        _create_database(url, database)
        yield PostgresServer(url=url.rsplit("/", 1)[0] + f"/{database}", port=port, password=password,
                             data_dir=data_dir, pg_ctl=bin_dir / "pg_ctl", run_as=tuple(prefix))
    finally:
        if started:
            try:
                run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"])
            except RuntimeError as e:
                logger.warning("could not stop the test PostgreSQL: %s", e)
        shutil.rmtree(root, ignore_errors=True)


def restart_server(server: PostgresServer) -> None:
    """`pg_ctl restart -m fast`: every connection is cut, as when the database pod is rescheduled.

    pg_ctl starts it again with the options it was started with (kept in postmaster.opts).
    """
    args = [*server.run_as, str(server.pg_ctl), "-D", str(server.data_dir), "-l",
            str(server.data_dir.parent / "server.log"), "-m", "fast", "-w", "-t", "60", "restart"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pg_ctl restart failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")


def _create_database(url: str, name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
