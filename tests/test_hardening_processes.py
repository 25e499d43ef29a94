"""Issue 11 (hardening), processes: DataLoader decode processes die with their parent,
`visearch serve` cleans up on SIGTERM like on SIGINT, and `visearch db start|stop|shell` give
analysts a server that stays up. Real processes, real signals, real PostgreSQL servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

from conftest import postmaster_pid, shared_data, wait_server_stopped

PARENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from visearch.embedding import load_model
    from visearch.embedding.pipeline import EmbedItem, iter_embedded_batches
    files = sorted(Path(sys.argv[1]).glob("*.jpg"))
    # one batch of photos, then a FIFO nobody writes to: the decode processes block in open(),
    # where no Python-level check (torch's parent watchdog, a SIGTERM handler) ever runs
    items = [EmbedItem(key=i, path=str(files[i])) for i in range(8)]
    items += [EmbedItem(key=8 + i, path=sys.argv[2]) for i in range(64)]
    batches = iter_embedded_batches(items, load_model("efficientnet-lite0"), batch_size=8, num_workers=2)
    next(batches)  # decode processes are up and prefetching
    print("READY", flush=True)
    time.sleep(600)
    """
)


def _wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return []
        time.sleep(0.2)
    return alive


def test_decode_processes_die_with_a_sigkilled_parent(tmp_path):
    fifo = tmp_path / "stuck.jpg"
    os.mkfifo(fifo)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(shared_data("coco128", "train2017")), str(fifo)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = []
    try:
        line = parent.stdout.readline()
        assert line.strip() == "READY", parent.stderr.read()
        children = [c.pid for c in psutil.Process(parent.pid).children(recursive=True)]
        assert len(children) >= 2
        parent.kill()  # SIGKILL: no cleanup in the parent at all
        parent.wait(10)
        assert _wait_gone(children, 10) == []
    finally:
        parent.kill()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

VISEARCH = str(Path(sys.executable).with_name("visearch"))


@pytest.fixture
def data_dir():
    path = Path(tempfile.mkdtemp(prefix="visearch-proc-"))
    path.chmod(0o755)
    yield path
    pid = postmaster_pid(path)
    if pid is not None:  # never leave a server behind, whatever the test did
        os.kill(pid, signal.SIGINT)
        psutil.Process(pid).wait(30)
    shutil.rmtree(path, ignore_errors=True)


def _env(data_dir: Path) -> dict:
    from visearch.db.server_cli import psql_binary

    env = {k: v for k, v in os.environ.items() if not k.startswith("VISEARCH_")}
    env.update(VISEARCH_DATA_DIR=str(data_dir), VISEARCH_PG_SHARED_BUFFERS="128MB",
               VISEARCH_PG_MAINTENANCE_WORK_MEM="64MB", PYTHONUNBUFFERED="1",
               PATH=os.path.dirname(psql_binary()) + os.pathsep + os.environ.get("PATH", ""))
    return env


def test_serve_stopped_with_sigterm_releases_the_embedded_server(data_dir):
    serve = subprocess.Popen([VISEARCH, "serve", "--port", "0", "--no-access-log"], env=_env(data_dir),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in serve.stderr:
            if "Uvicorn running on" in line:
                break
        else:
            raise AssertionError(f"serve did not start (exit {serve.wait()})")
        assert postmaster_pid(data_dir) is not None
        serve.send_signal(signal.SIGTERM)  # what kill, systemd and docker stop send
        assert serve.wait(180) != -signal.SIGTERM  # it exited by itself, atexit handlers included
        assert wait_server_stopped(data_dir, 120)  # the last holder stopped the server, as on Ctrl-C
        holders = json.loads((data_dir / "pgdata" / ".handle_pids.json").read_text() or "[]")
        assert serve.pid not in holders
    finally:
        serve.kill()


def test_the_readme_analyst_line_works(data_dir):
    env = _env(data_dir)
    start = subprocess.run([VISEARCH, "db", "start"], env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr
    assert start.stdout.startswith("postgresql://")
    # the README's line, through a shell, after `db start` has returned
    line = subprocess.run(["bash", "-c", 'psql "$(visearch db url)" -tAc "SELECT count(*) FROM datasets"'],
                          env={**env, "PATH": os.path.dirname(VISEARCH) + os.pathsep + env["PATH"]},
                          capture_output=True, text=True, timeout=120)
    assert line.returncode == 0 and line.stdout.strip() == "0", line.stderr
    shell = subprocess.run([VISEARCH, "db", "shell", "-tAc", "SELECT 40 + 2"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert shell.returncode == 0 and shell.stdout.strip() == "42", shell.stderr
    assert postmaster_pid(data_dir) is not None  # still up for the next query
    stop = subprocess.run([VISEARCH, "db", "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert wait_server_stopped(data_dir, 120)
