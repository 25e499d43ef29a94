"""visearch.db.prepared: statements prepared once per connection and run with literal
parameters in one Query, against the real server."""

from __future__ import annotations

import psycopg
import pytest

from visearch.db import prepared as P
from visearch.db.database import Database


@pytest.fixture
def conn(database):
    with Database(database.url, embedded=False).connect(autocommit=True) as c:
        yield c


def ours(conn) -> list[str]:
    return [name for name, in conn.execute(
        "SELECT name FROM pg_prepared_statements WHERE name LIKE 'visearch\\_%%' ORDER BY name")]


def test_a_value_is_written_in_as_the_server_reads_it_back(conn):
    """Parameters travel as literals in the Query text: every value must come back exactly as
    given, quotes, backslashes, semicolons and comment markers included (nothing of a value may
    ever be read as SQL), and values that differ only in type must not share a cached literal."""
    echo = P.prepared("SELECT %(v)s::text AS v")
    hostile = ["x'); DROP TABLE images; --", "back\\slash", "dollar $$ quote $1", "é ✓", "", "semi;colon\n;"]
    for value in hostile:
        assert P.run(conn, [(echo, {"v": value})]) == [[(value,)]]
    scalars = [P.run(conn, [(echo, {"v": v})])[0][0][0] for v in (1, True, 1.5, None, 1, True)]
    assert scalars == ["1", "true", "1.5", None, "1", "true"]
    lists = P.prepared("SELECT %(v)s::text[]::text")
    got = [P.run(conn, [(lists, {"v": v})])[0][0][0] for v in ([1], [True], ["a b"], [], [1], [True])]
    assert got == ["{1}", "{true}", '{"a b"}', "{}", "{1}", "{true}"]
    assert conn.execute("SELECT to_regclass('images') IS NOT NULL").fetchone()[0]  # (still there)


def test_a_statement_is_prepared_once_per_connection_and_the_least_used_deallocated(conn, monkeypatch):
    monkeypatch.setattr(P, "MAX_PREPARED", 3)
    statements = [P.prepared(f"SELECT {k} + %(x)s::int") for k in range(5)]
    for k, statement in enumerate(statements[:3]):
        assert P.run(conn, [(statement, {"x": 1})]) == [[(k + 1,)]]
    assert ours(conn) == sorted(s.name for s in statements[:3])
    P.run(conn, [(statements[0], {"x": 1})])  # used again: now the most recent
    P.run(conn, [(statements[3], {"x": 1}), (statements[4], {"x": 2})])  # two new ones: two go
    assert ours(conn) == sorted(s.name for s in (statements[0], statements[3], statements[4]))
    plans = conn.execute("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = %s",
                         (statements[0].name,)).fetchone()
    assert plans == (2, 0)  # one PREPARE, two runs on its generic plan
    assert P.run(conn, [(statements[1], {"x": 5})]) == [[(6,)]]  # deallocated: prepared again
    assert ours(conn) == sorted(s.name for s in (statements[1], statements[3], statements[4]))


def test_statements_dropped_behind_its_back_are_prepared_again(conn):
    """DISCARD ALL (a pooler's reset, or a person) drops the prepared statements; the next run
    finds out from the server, reads back what is left and prepares again."""
    statement = P.prepared("SELECT 40 + %(x)s::int")
    assert P.run(conn, [(statement, {"x": 1})]) == [[(41,)]]
    conn.execute("DISCARD ALL")
    assert P.run(conn, [(statement, {"x": 2})]) == [[(42,)]]
    assert ours(conn) == [statement.name]


def test_a_failed_run_rolls_its_settings_back_and_keeps_the_statements_it_prepared(conn):
    ok, bad = P.prepared("SELECT current_setting('hnsw.ef_search')"), P.prepared("SELECT 1 / %(x)s::int")
    with pytest.raises(psycopg.errors.DivisionByZero):
        P.run(conn, [(ok, {}), (bad, {"x": 0})], settings=[("hnsw.ef_search", "321")])
    assert sorted(ours(conn)) == sorted([ok.name, bad.name])  # PREPARE is not transactional
    assert conn.execute("SHOW hnsw.ef_search").fetchone()[0] != "321"
    assert P.run(conn, [(ok, {}), (bad, {"x": 1})], settings=[("hnsw.ef_search", "321")]) == [[("321",)], [(1,)]]
    assert conn.execute("SHOW plan_cache_mode").fetchone()[0] == "auto"


def test_a_table_changed_under_a_statement_is_prepared_anew(conn):
    """A migration while serving may change a table's columns under a prepared statement
    (PostgreSQL: "cached plan must not change result type"); the next run prepares it again."""
    conn.execute("CREATE TEMP TABLE changing (a int)")
    conn.execute("INSERT INTO changing VALUES (1), (2)")
    statement = P.prepared("SELECT * FROM changing WHERE a > %(x)s::int ORDER BY a")
    assert P.run(conn, [(statement, {"x": 0})]) == [[(1,), (2,)]]
    conn.execute("ALTER TABLE changing ADD COLUMN b text DEFAULT 'new'")
    assert P.run(conn, [(statement, {"x": 1})]) == [[(2, "new")]]
