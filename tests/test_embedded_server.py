"""The bundled PostgreSQL: shared by processes, stopped by the last one, not wedged by a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psutil
import pytest

from conftest import postmaster_pid, wait_server_stopped

HOLDER = textwrap.dedent(
    """
    import sys, time
    from visearch.config import Settings
    from visearch.db.database import open_database
    db = open_database(Settings(data_dir=sys.argv[1], pg_shared_buffers="128MB",
                                pg_maintenance_work_mem="256MB"))
    with db.connect() as conn:
        print(conn.execute("SELECT count(*) FROM datasets").fetchone()[0], flush=True)
    print("READY", flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


@pytest.fixture
def data_dir():
    path = Path(tempfile.mkdtemp(prefix="visearch-embedded-"))
    path.chmod(0o755)
    yield path
    pid = postmaster_pid(path)
    if pid is not None:  # never leave a server behind, whatever the test did
        os.kill(pid, signal.SIGTERM)
        psutil.Process(pid).wait(20)
    shutil.rmtree(path, ignore_errors=True)


def _holder(data_dir: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir), str(seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    for line in proc.stdout:
        if line.strip() == "READY":
            return proc
    raise AssertionError(f"holder did not start: {proc.stderr.read()}")


def test_processes_share_one_server_and_the_last_one_stops_it(data_dir):
    first = _holder(data_dir, seconds=30)
    server = postmaster_pid(data_dir)
    assert server is not None
    second = _holder(data_dir, seconds=0)
    assert second.wait(60) == 0
    assert postmaster_pid(data_dir) == server  # still serving the first process
    first.send_signal(signal.SIGINT)  # a normal exit path (KeyboardInterrupt runs atexit)
    first.wait(60)
    assert wait_server_stopped(data_dir, 20)


def test_a_killed_holder_does_not_leave_the_server_unusable_or_running_forever(data_dir):
    victim = _holder(data_dir, seconds=60)
    victim.kill()  # SIGKILL: no atexit, its pid stays in .handle_pids.json
    victim.wait(10)
    pids = json.loads((data_dir / "pgdata" / ".handle_pids.json").read_text())
    assert victim.pid in pids and postmaster_pid(data_dir) is not None
    # the next process reaches the still-running server, and as the last live holder stops it
    after = _holder(data_dir, seconds=0)
    assert after.wait(60) == 0
    assert wait_server_stopped(data_dir, 20)
    # and it starts again cleanly afterwards
    again = _holder(data_dir, seconds=0)
    assert again.wait(60) == 0
