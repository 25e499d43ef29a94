"""Where the SQL files and Alembic scripts are, in a source checkout or an installed wheel."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _locate(packaged: str, checkout: str) -> Path:
    # A wheel carries them inside the package (pyproject force-include); a checkout or an
    # editable install reads them from the repository root.
    for candidate in (_PACKAGE / packaged, _PACKAGE.parent / checkout):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"visearch is missing its {checkout!r} files (looked in {_PACKAGE})")


def sql_dir() -> Path:
    return _locate("_sql", "sql")


def alembic_dir() -> Path:
    return _locate("_alembic", "alembic")


@lru_cache(maxsize=None)
def read_sql(name: str) -> str:
    """Text of ``sql/<name>`` (e.g. ``"search/images.sql"``).

    Raises:
        FileNotFoundError: no such file.
    """
    return (sql_dir() / name).read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def sql_blocks(name: str) -> dict[str, str]:
    """The named blocks of ``sql/<name>``: a line ``-- name: X`` starts block ``X``, which runs
    to the next such line. Comment lines and blank lines are left out of each block's text
    (comments may then mention a ``psycopg.sql`` template's ``{placeholders}``); the lines
    before the first name are the file's header.

    Returns:
        ``{name: statement text}``, in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: two blocks with the same name (the second would hide the first).
    """
    blocks: dict[str, list[str]] = {}
    current = None
    for line in read_sql(name).splitlines():
        if line.startswith("-- name:"):
            current = line.split(":", 1)[1].strip()
            if current in blocks:
                raise ValueError(f"sql/{name}: two blocks named {current!r}")
            blocks[current] = []
        elif current is not None and line.strip() and not line.lstrip().startswith("--"):
            blocks[current].append(line)
    return {block: "\n".join(lines) for block, lines in blocks.items()}


def function_definitions(name: str, functions: tuple[str, ...]) -> list[str]:
    """The ``CREATE FUNCTION f(...) ... END $$;`` statements of ``functions`` in ``sql/<name>``,
    each turned into ``CREATE OR REPLACE FUNCTION``, in the order asked (for restoring a frozen
    revision's definitions, e.g. a downgrade).

    Raises:
        LookupError: a function is not defined in that file.
    """
    import re

    text = read_sql(name)
    statements = []
    for function in functions:
        found = re.search(rf"^CREATE FUNCTION {re.escape(function)}\(.*?^END \$\$;", text, re.S | re.M)
        if found is None:
            raise LookupError(f"sql/{name} defines no function {function}")
        statements.append("CREATE OR REPLACE" + found.group(0)[len("CREATE"):])
    return statements
