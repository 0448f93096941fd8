"""Where SQL runs: the ClickHouse server (clickhouse-driver) or chdb (the current engine in-process)."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from typing import Any, Protocol

from clickhouse_driver import Client
from clickhouse_driver.errors import NetworkError, ServerException

from schemas.errors import LeadflowError

# What a vanished server raises with clickhouse-driver (INFRA.md): retry these, nothing else.
NETWORK_ERRORS = (NetworkError, EOFError, BrokenPipeError, ConnectionError, socket.timeout)
# Server refusals that say nothing about the rows (a missing table or database, a read-only or
# unknown user, memory or part limits, timeouts): the same rows may go in later, so they are
# retried like an outage, never dead-lettered.
NOT_THE_ROWS_CODES = frozenset(
    {
        16,  # NO_SUCH_COLUMN_IN_TABLE: migrations not applied yet
        60,  # UNKNOWN_TABLE
        81,  # UNKNOWN_DATABASE
        159,  # TIMEOUT_EXCEEDED
        164,  # READONLY
        192,  # UNKNOWN_USER
        193,  # WRONG_PASSWORD
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        319,  # UNKNOWN_STATUS_OF_INSERT
        394,  # QUERY_WAS_CANCELLED
        497,  # ACCESS_DENIED
        516,  # AUTHENTICATION_FAILED
    }
)


def is_transient(exc: BaseException) -> bool:
    """True when `exc` from an insert means "not now" (an outage, a limit, a missing table), not
    "not these rows": the caller retries the same rows later."""
    if isinstance(exc, NETWORK_ERRORS):
        return True
    code = getattr(exc, "code", None)
    return isinstance(exc, ServerException) and code in NOT_THE_ROWS_CODES


class ClickHouseUnavailable(LeadflowError):
    """The ClickHouse server cannot be reached."""


class Backend(Protocol):
    """Runs SQL; rows come back as tuples."""

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]: ...


class ServerBackend:
    """A ClickHouse server through clickhouse-driver (native protocol)."""

    def __init__(
        self, host: str, port: int, database: str, user: str = "default", password: str = ""
    ) -> None:
        self.database = database
        self.client = Client(
            host=host,
            port=port,
            database=database,
            user=user,
            password=password,
            connect_timeout=5,
            send_receive_timeout=60,
        )
        self._admin = Client(host=host, port=port, user=user, password=password, connect_timeout=5)

    def create_database(self) -> None:
        """CREATE DATABASE IF NOT EXISTS for this backend's database."""
        try:
            self._admin.execute(f"CREATE DATABASE IF NOT EXISTS {_ident(self.database)}")
        except NETWORK_ERRORS as exc:
            raise ClickHouseUnavailable(
                f"ClickHouse does not answer ({exc.__class__.__name__}); start it with `leadflow stack up`"
            ) from None

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return list(self.client.execute(sql, params))

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """(column names, rows) of a SELECT."""
        rows, types = self.client.execute(sql, with_column_types=True)
        return [name for name, _ in types], list(rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.client.execute(
            f"INSERT INTO {_ident(table)} ({', '.join(columns)}) VALUES", list(rows)
        )


class ChdbBackend:
    """The current ClickHouse engine in-process (PyPI chdb-core): checks the production dialect."""

    def __init__(self, path: str, database: str) -> None:
        from chdb import session

        self.session = session.Session(path)
        self.database = database

    def create_database(self) -> None:
        """CREATE DATABASE IF NOT EXISTS and make it current."""
        self.session.query(f"CREATE DATABASE IF NOT EXISTS {_ident(self.database)}")
        self.session.query(f"USE {_ident(self.database)}")

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if params:
            sql = sql % {name: _literal(value) for name, value in params.items()}
        return self.query(sql)[1]

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """(column names, rows) of a statement."""
        result = self.session.query(sql, "JSONCompact")
        text = result.bytes() if hasattr(result, "bytes") else bytes(result)
        if not text.strip():
            return [], []
        data = json.loads(text)
        return [m["name"] for m in data["meta"]], [tuple(row) for row in data["data"]]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        payload = "\n".join(
            json.dumps(dict(zip(columns, _jsonable(row), strict=True))) for row in rows
        )
        self.session.query(
            f"INSERT INTO {_ident(table)} ({', '.join(columns)}) FORMAT JSONEachRow\n{payload}"
        )


def _jsonable(row: Sequence[Any]) -> list[Any]:
    out = []
    for value in row:
        if hasattr(value, "strftime"):
            value = value.strftime("%Y-%m-%d %H:%M:%S")
        out.append(value)
    return out


def _literal(value: Any) -> str:
    """A SQL literal for chdb (the server path uses clickhouse-driver's own parameters)."""
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_literal(v) for v in value) + ")"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise LeadflowError(f"invalid ClickHouse identifier {name!r}")
    return name
