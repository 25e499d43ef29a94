"""``visearch serve``: the HTTP API on uvicorn."""

from __future__ import annotations

import ipaddress
import signal

import click

from visearch.cli_context import model_from_command_line, pass_ctx


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # atexit handlers run: the embedded server is released


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but localhost needs API keys (VISEARCH_API_KEYS).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--access-log/--no-access-log", default=True, show_default=True)
@click.option("--torch-threads", type=click.IntRange(0, 1024), default=0, show_default=True,
              help="Threads per model inference (uploaded-image and text queries); 0: torch's default "
                   "(all cores). Concurrent requests run in parallel anyway: on a small or shared "
                   "machine 1 avoids oversubscribing the cores (much steadier latency).")
@pass_ctx
def serve(obj, host: str, port: int, log_level: str, access_log: bool, torch_threads: int):
    """Serve the HTTP API (OpenAPI docs at /schema) on the embedded database by default.

    API keys: VISEARCH_API_KEYS="alice:admin:SECRET,bob:read:SECRET2" (roles read, write,
    admin; secrets of 16 characters or more; clients send the X-API-Key header). Without keys
    the server listens on localhost only.
    """
    import uvicorn

    from visearch.http.app import create_app
    from visearch.http.auth import parse_api_keys
    from visearch.http.jobs import EmbedJobs

    settings = obj.settings
    try:
        keys = parse_api_keys(settings.api_keys)
    except ValueError as exc:  # ApiKeyError: which entry and why, never the secret
        raise click.ClickException(f"VISEARCH_API_KEYS: {exc}") from exc
    if not keys and not is_loopback(host):
        raise click.ClickException(
            f"refusing to listen on {host} without API keys: anyone who can reach it could read and "
            "change your data. Set VISEARCH_API_KEYS=name:role:secret[,name2:role:secret2] or listen on 127.0.0.1."
        )
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    pinned = [settings.model] if model_from_command_line() else []  # only a typed --model pins
    app = create_app(settings, obj.db, embed_jobs=EmbedJobs(obj.db, settings, pinned=pinned))
    from visearch.catalog import return_freed_memory_to_the_os

    return_freed_memory_to_the_os()  # decoded images' memory goes back once freed (thumbnails)
    # uvicorn shuts down gracefully on SIGINT and SIGTERM, then re-raises the signal with the
    # handler that was there before it started: for SIGTERM (kill, systemd, docker stop) that was
    # the default, which ends the process without atexit, leaving the embedded server running
    # with this process as a stale holder. Exit like on Ctrl-C instead.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    click.echo(f"visearch API on http://{host}:{port} (docs: /schema; "
               f"{'API key required' if keys else 'no API key'})", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log)
