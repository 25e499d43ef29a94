"""A local Label Studio for development, tests and benchmarks, on visearch's PostgreSQL.

Label Studio is installed from PyPI into its **own** virtualenv (``.venv-label-studio/`` beside
the repository by default): its pinned Django stack must not fight visearch's dependencies.
The version is pinned in one place, ``integrations/label-studio-requirements.txt``; the
virtualenv is rebuilt only when that file changes (a stamp file inside it holds the text it was
built from), so CI caches the folder keyed by the file's hash.

:class:`LabelStudioServer` runs it on 127.0.0.1 on a free port against a visearch database:
the same database, with Label Studio's tables in their own schema (``label_studio``), chosen
through libpq's ``PGOPTIONS=-c search_path=label_studio`` (Label Studio's settings have no
schema option; its driver is libpq). A Unix-socket-only server (the embedded one) is reached
by giving the socket directory as ``POSTGRE_HOST``. A user with a known API token is created at
start (``--username/--password/--user-token``, legacy tokens enabled).

Command line: ``python -m visearch.integrations.label_studio.server --install`` (what
``make label-studio`` runs) builds or checks the virtualenv and prints its path.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

_REPO = Path(__file__).resolve().parents[3]
#: The one place Label Studio's version is pinned.
REQUIREMENTS = _REPO / "integrations" / "label-studio-requirements.txt"
DEFAULT_VENV = _REPO / ".venv-label-studio"
_STAMP = ".visearch-requirements"


def ensure_venv(venv: Path = DEFAULT_VENV, *, python: str = sys.executable) -> Path:
    """Build (or reuse) Label Studio's virtualenv; return its ``label-studio`` executable.

    Reused as is when its stamp matches :data:`REQUIREMENTS` (the cached case: no network);
    otherwise rebuilt from scratch (~3-4 min and ~1 GB on a fresh machine).

    Raises:
        subprocess.CalledProcessError: venv creation or pip failed.
    """
    venv = Path(venv)
    wanted = REQUIREMENTS.read_text()
    exe = venv / "bin" / "label-studio"
    stamp = venv / _STAMP
    if exe.exists() and stamp.exists() and stamp.read_text() == wanted:
        return exe
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + ["-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(wanted)
    return exe


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LabelStudioServer:
    """Label Studio running against ``database_url`` with its tables in ``schema``.

    Use as a context manager; :attr:`url` and :attr:`token` are set once it answers.

    Args:
        database_url: libpq URL of the visearch database (TCP or ``?host=<socket dir>``).
        schema: schema for Label Studio's tables (created if missing).
        data_dir: Label Studio's ``BASE_DATA_DIR`` (its uploads are in ``data_dir/media``);
            default: a new temporary directory, removed at stop.
        local_files_root: served as ``/data/local-files/?d=<path relative to it>``.
        start_timeout: seconds to wait for migrations and the first answer.
    """

    def __init__(self, database_url: str, *, schema: str = "label_studio", data_dir: Path | None = None,
                 local_files_root: Path | None = None, venv: Path = DEFAULT_VENV, start_timeout: float = 600.0):
        self.database_url = database_url
        self.schema = schema
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="visearch-label-studio-"))
        self.local_files_root = Path(local_files_root) if local_files_root else None
        self.venv = venv
        self.start_timeout = start_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(20)
        self.username = "visearch@localhost"
        self.password = secrets.token_urlsafe(12)
        self.log_path = self.data_dir / "label-studio.log"
        self._proc: subprocess.Popen | None = None

    @property
    def media_root(self) -> Path:
        """Label Studio's ``MEDIA_ROOT`` (``/data/upload/...`` files live under it)."""
        return self.data_dir / "media"

    def environment(self) -> dict[str, str]:
        """The environment Label Studio runs with (its settings are environment variables)."""
        info = conninfo_to_dict(self.database_url)
        env = dict(os.environ)
        env.update({
            "DJANGO_DB": "default",
            "POSTGRE_NAME": info.get("dbname", "postgres"),
            "POSTGRE_USER": info.get("user", "postgres"),
            "POSTGRE_PASSWORD": info.get("password", ""),
            "POSTGRE_HOST": info.get("host", "localhost"),
            "POSTGRE_PORT": str(info.get("port", "5432")),
            "PGOPTIONS": f"-c search_path={self.schema}",
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LOG_LEVEL": "WARNING",
            "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
        })
        if self.local_files_root is not None:
            env["LOCAL_FILES_SERVING_ENABLED"] = "true"
            env["LOCAL_FILES_DOCUMENT_ROOT"] = str(self.local_files_root)
        return env

    def start(self) -> "LabelStudioServer":
        """Create the schema, start Label Studio, wait until its API answers with the token.

        Raises:
            RuntimeError: it exited or did not answer within ``start_timeout`` (the message
                ends with its log).
        """
        exe = ensure_venv(self.venv)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
             f"--username={self.username}", f"--password={self.password}", f"--user-token={self.token}",
             "--enable-legacy-api-token", "--data-dir", str(self.data_dir)],
            env=self.environment(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self._proc.returncode}:\n{self._log_tail()}")
            try:
                r = httpx.get(f"{self.url}/api/current-user/whoami", headers=self.headers, timeout=5)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"Label Studio did not answer within {self.start_timeout:.0f} s:\n{self._log_tail()}")

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers that authenticate as the bootstrap user (legacy token)."""
        return {"Authorization": f"Token {self.token}"}

    def _log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop Label Studio (SIGTERM, then SIGKILL after 10 s); remove a temporary data dir."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "LabelStudioServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="build or check the virtualenv and print its path")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    args = parser.parse_args(argv)
    if args.install:
        started = time.perf_counter()
        exe = ensure_venv(args.venv)
        print(f"{exe} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
