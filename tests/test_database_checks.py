"""What visearch says when the database cannot host it."""

from __future__ import annotations

import pytest

from visearch.db.database import DatabaseSetupError, _parse_version, check_server


def test_unreachable_server_is_named_with_a_fix():
    url = "postgresql://visearch:secret@/nowhere?host=/nonexistent-socket-dir&connect_timeout=2"
    with pytest.raises(DatabaseSetupError) as err:
        check_server(url)
    message = str(err.value)
    assert "cannot connect" in message and "VISEARCH_DATABASE_URL" in message
    assert "secret" not in message  # passwords are redacted


def test_the_checks_read_the_servers_own_versions(database, monkeypatch):
    """The bundled server passes, and the same server fails once the required versions are
    above what it reports: the checks look at the server, they do not just connect."""
    import visearch.db.database as database_module

    check_server(database.url)
    monkeypatch.setattr(database_module, "MIN_PGVECTOR", (99, 0, 0))
    with pytest.raises(DatabaseSetupError, match=r"pgvector \S+ .* is too old"):
        check_server(database.url)
    monkeypatch.undo()
    monkeypatch.setattr(database_module, "MIN_SERVER_VERSION", 990000)
    with pytest.raises(DatabaseSetupError, match="PostgreSQL .* is too old"):
        check_server(database.url)


def test_pgvector_versions_compare_numerically():
    assert _parse_version("0.8.6") >= (0, 8, 0) > _parse_version("0.7.4")
    assert _parse_version("0.10.0") > _parse_version("0.8.1")


def test_a_fresh_database_passes_when_the_server_offers_pgvector(database):
    """The extension need not exist yet in the database: the first migration creates it."""
    with database.connect(autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS visearch_check_empty")
        conn.execute("CREATE DATABASE visearch_check_empty")
    empty = database.url.replace("/visearch?", "/visearch_check_empty?")
    try:
        check_server(empty)  # pgvector is available to CREATE EXTENSION there: fine
    finally:
        with database.connect(autocommit=True) as conn:
            conn.execute("DROP DATABASE visearch_check_empty")
