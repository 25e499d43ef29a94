"""What every ``visearch`` command shares: the settings, the database (opened on first use),
``pass_ctx``, ``fail`` and the ``--model`` pin rule.

The command modules (:mod:`visearch.cli`, :mod:`visearch.worker.cli`, :mod:`visearch.http.cli`)
import this module and never each other, so each of them can be imported on its own.
Nothing here imports torch, a model or the database driver until a command needs it.
"""

from __future__ import annotations

import click

from visearch.config import Settings


class CliContext:
    """``ctx.obj`` of the ``visearch`` group: the settings and a lazily opened database."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._db = None

    @property
    def db(self):
        """The :class:`visearch.db.database.Database`, opened (and migrated) on first use.

        Raises:
            click.ClickException: the server is unreachable or lacks pgvector (the message says
                what is missing and how to fix it).
        """
        if self._db is None:
            from visearch.db.database import DatabaseSetupError, open_database

            try:
                self._db = open_database(self.settings)
            except DatabaseSetupError as exc:
                fail(exc)
        return self._db


pass_ctx = click.make_pass_decorator(CliContext)


def fail(exc: Exception) -> None:
    """Stop the command with ``exc``'s message (exit status 1), no traceback."""
    raise click.ClickException(str(exc)) from exc


def model_from_command_line() -> str | None:
    """The spec given with ``visearch --model SPEC ...`` on the command line itself, else None.

    ``--model`` also reads ``VISEARCH_MODEL``; only a flag typed for this command pins the model
    (of a search, of a worker). The environment names the default model of a new database, and
    deployments set it everywhere (docker-compose), which must not stop model switches.
    """
    from click.core import ParameterSource

    root = click.get_current_context().find_root()
    if root.get_parameter_source("model") == ParameterSource.COMMANDLINE:
        return root.obj.settings.model
    return None
