"""Named server-side prepared statements, several run in one round trip.

A search runs two statements that are planned once per connection and then only executed: the
context statement (a call of ``search_context()``, ``sql/schema/0015_search_context.sql``) and
the ranking statement of its kind (:func:`visearch.search.statements.prepared_rank`).
:func:`run` sends what one search needs as one simple-protocol Query message, as a person at
psql would type it::

    PREPARE visearch_1f0c... AS <statement with $1, $2, ...>;   -- first use on this connection
    SELECT set_config('plan_cache_mode', ..., true), set_config('hnsw.ef_search', '100', true);
    EXECUTE visearch_1f0c...('bench-synthetic-1280', ...);
    EXECUTE visearch_93ab...('{5020}')

A multi-statement Query is one implicit transaction (PostgreSQL docs, "Multiple Statements in a
Simple Query"): the ``set_config(..., true)`` settings hold for the EXECUTEs after them and end
with the Query, also when a statement in it fails. The parameters are written in as literals
with psycopg's quoting (:class:`psycopg.sql.Literal`, as :class:`psycopg.ClientCursor` does); a
parameter's type is the one its ``$n`` is cast to in the statement (every placeholder must be
cast once, e.g. ``%(rows)s::integer``). A query vector given as a parameter (a text query, an
upload, several stored images averaged) travels as text: 25 kB for 1280-d, 0.7 ms to render
(timeit, pgvector's text dumper).

Why not psycopg's own prepared statements in a pipeline, as before: a search at a 0.1% filter
(100k x 1280-d, where the whole search takes 1-2 ms) spent 0.7-0.8 ms of client CPU that way,
0.35-0.37 ms this way (with the caches below), against 0.1 ms for one hand-written statement
(scratch runs side by side); on a 2-core machine the client's time is the server's.

Which statements a connection has prepared is kept on the connection object. PREPARE is not
transactional: a Query that fails after its PREPAREs leaves them prepared, so after any error
the list is read back from ``pg_prepared_statements`` before the next use. Outside a
transaction, a statement missing (``DISCARD ALL`` by someone) or already there, or one whose
table changed its columns, is recovered from once (:func:`_recoverable`). At most
:data:`MAX_PREPARED` are kept per connection, the least recently used deallocated first.

Prepared statements live in the server session: behind a pooler in transaction mode (PgBouncer
``pool_mode = transaction``) a connection's next transaction may land in another session. Connect
visearch to PostgreSQL directly or through a pooler in session mode.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import psycopg
from psycopg.adapt import Transformer

#: Statements this module keeps prepared per connection (psycopg's own default is 100).
MAX_PREPARED = 100

#: The name prefix of the statements this module prepares.
PREFIX = "visearch_"

#: A bound parameter in psycopg's named style, ``%(name)s``.
PLACEHOLDER = re.compile(r"%\((\w+)\)s")

#: The planner's setting for the EXECUTEs of one :func:`run`: generic plans (a plan made once
#: per connection); with Citus loaded, custom plans (Citus cannot distribute a generic plan whose
#: parameters it has not seen: "could not create distributed plan").
PLAN_MODE = ("set_config('plan_cache_mode', CASE WHEN current_setting('citus.version', true) IS NULL"
             " THEN 'force_generic_plan' ELSE 'force_custom_plan' END, true)")

_ATTRIBUTE = "_visearch_prepared"
_LITERALS = "_visearch_literals"

#: Values whose literal is kept per connection (:func:`_literal`): these and lists of these.
_SCALARS = (str, int, float, bool, type(None))

#: Literals kept per connection before the cache starts over.
MAX_LITERALS = 1024


@dataclass(frozen=True)
class Prepared:
    """A statement to prepare: ``text`` has ``$n`` placeholders, ``params`` their names in order;
    ``name`` is derived from the text (the same text has the same name in every process)."""

    name: str
    text: str
    params: tuple[str, ...]


@functools.lru_cache(maxsize=512)
def prepared(statement: str) -> Prepared:
    """``statement`` (``%(name)s`` placeholders, ``%%`` for ``%``) as a :class:`Prepared`: its
    placeholders numbered ``$1, $2, ...`` in order of first use (a name used twice is one
    parameter), a trailing ``;`` dropped. Cached per process."""
    names: list[str] = []

    def number(match: re.Match) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    text = PLACEHOLDER.sub(number, statement).replace("%%", "%").rstrip().rstrip(";").rstrip()
    name = PREFIX + hashlib.blake2b(text.encode(), digest_size=10).hexdigest()
    return Prepared(name, text, tuple(names))


def run(conn: psycopg.Connection, steps: Sequence[tuple[Prepared, Mapping[str, Any]]], *,
        settings: Sequence[tuple[str, str]] = ()) -> list[list[tuple]]:
    """Execute each ``(statement, params)`` of ``steps`` with a generic plan (:data:`PLAN_MODE`),
    pgvector's or other ``settings`` (``(name, value)`` pairs) transaction-local before them,
    all in one round trip; prepare the statements this connection has not prepared yet in the
    same round trip.

    Args:
        conn: a connection, not in a pipeline. In autocommit mode it takes one round trip. In a
            transaction (psycopg opens one first: a round trip of its own), the statements run
            inside a savepoint that is rolled back after them: the settings do not outlive them
            (the statements only read).
        steps: the statements and their parameters by name (the values psycopg can adapt).

    Returns:
        Each statement's rows, in ``steps`` order (tuples).

    Raises:
        psycopg.Error: from a statement; the whole Query is rolled back (its settings too).
    """
    for attempt in (0, 1):
        known = _known(conn)
        try:
            return _send(conn, known, steps, settings)
        except psycopg.Error as error:
            setattr(conn, _ATTRIBUTE, None)  # PREPAREs before a failure stay: read back first
            if attempt or not _recoverable(conn, error, steps):
                raise
    raise AssertionError("unreachable")


def _recoverable(conn: psycopg.Connection, error: psycopg.Error,
                 steps: Sequence[tuple[Prepared, Mapping[str, Any]]]) -> bool:
    """Whether ``steps`` may run again after ``error``, outside a transaction only: the server
    dropped statements behind this module's back (``DISCARD ALL``, ``DEALLOCATE``) or has ones it
    did not know of, or a table's columns changed under a statement ("cached plan must not
    change result type": a migration while serving), which is then prepared anew."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    if isinstance(error, (psycopg.errors.InvalidSqlStatementName, psycopg.errors.DuplicatePreparedStatement)):
        return True
    if isinstance(error, psycopg.errors.FeatureNotSupported) and "must not change result type" in str(error):
        known = _known(conn)
        for name in {statement.name for statement, _ in steps} & set(known):
            conn.execute(f"DEALLOCATE {name}")
            del known[name]
        return True
    return False


def _known(conn: psycopg.Connection) -> OrderedDict:
    """The statements ``conn`` has prepared, least recently used first."""
    known = getattr(conn, _ATTRIBUTE, OrderedDict())  # a new connection (session) has none
    if known is None:  # unknown since an error: read it back
        known = OrderedDict((name, None) for name, in conn.execute(
            "SELECT name FROM pg_prepared_statements WHERE name LIKE %s ORDER BY prepare_time",
            (PREFIX.replace("_", r"\_") + "%",)))
    setattr(conn, _ATTRIBUTE, known)
    return known


def _literal(conn: psycopg.Connection) -> Callable[[Any], bytes]:
    """psycopg's literal of a value for ``conn`` (as :class:`psycopg.sql.Literal` renders it),
    kept per connection for plain values (:data:`_SCALARS` and lists of them, told apart by
    type and ``repr``): a kind of search sends the same model, filters and limits each time,
    and quoting a list costs more than looking it up."""
    as_literal = Transformer.from_context(conn).as_literal  # (sql.Literal makes one per value)
    cache = getattr(conn, _LITERALS, None)
    if cache is None:
        cache = {}
        setattr(conn, _LITERALS, cache)

    def literal(value: Any) -> bytes:
        kind = type(value)
        if kind not in _SCALARS and not (kind is list and all(type(v) in _SCALARS for v in value)):
            return as_literal(value)
        key = (kind, repr(value))
        found = cache.get(key)
        if found is None:
            if len(cache) >= MAX_LITERALS:
                cache.clear()
            found = cache[key] = as_literal(value)
        return found

    return literal


def _send(conn: psycopg.Connection, known: OrderedDict, steps: Sequence[tuple[Prepared, Mapping[str, Any]]],
          settings: Sequence[tuple[str, str]]) -> list[list[tuple]]:
    literal = _literal(conn)
    parts: list[bytes] = []
    new: list[str] = []
    for statement, _ in steps:
        if statement.name not in known and statement.name not in new:
            parts.append(f"PREPARE {statement.name} AS {statement.text}".encode())
            new.append(statement.name)
    used = {statement.name for statement, _ in steps}
    evicted = []
    if len(known) + len(new) > MAX_PREPARED:
        evicted = [name for name in known if name not in used][:len(known) + len(new) - MAX_PREPARED]
    parts += [f"DEALLOCATE {name}".encode() for name in evicted]
    if not conn.autocommit:  # in the caller's transaction: the settings end with a savepoint
        parts.append(b"SAVEPOINT visearch_run")
    parts.append(b"SELECT " + b", ".join([PLAN_MODE.encode()] + [
        b"set_config(%s, %s, true)" % (literal(name), literal(value)) for name, value in settings]))
    first = len(parts)
    for statement, params in steps:
        args = b", ".join(literal(params[name]) for name in statement.params)
        parts.append(b"EXECUTE %s(%s)" % (statement.name.encode(), args) if args
                     else b"EXECUTE " + statement.name.encode())
    if not conn.autocommit:
        parts += [b"ROLLBACK TO SAVEPOINT visearch_run", b"RELEASE SAVEPOINT visearch_run"]
    cur = conn.execute(b"\n;\n".join(parts))  # (no parameters: sent as it is, simple protocol)
    rows = []
    for k in range(len(parts)):
        if first <= k < first + len(steps):
            rows.append(cur.fetchall())
        cur.nextset()
    for name in evicted:
        del known[name]
    for name in used:
        known[name] = None
        known.move_to_end(name)
    return rows
