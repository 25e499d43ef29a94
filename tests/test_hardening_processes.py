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

from conftest import shared_data

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
