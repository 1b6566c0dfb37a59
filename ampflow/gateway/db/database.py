"""The database: one engine, and short read and write transactions on it.

Every request does its work in one :meth:`Database.write` block (one transaction, committed before
the response is sent) or one :meth:`Database.read` block. On SQLite the file runs in WAL mode with
``synchronous=FULL``, so a committed write survives a crash of the process or the machine; write
transactions start with ``BEGIN IMMEDIATE`` so that concurrent writers queue on the busy timeout
instead of failing halfway. Within one process, SQLite write transactions also take a lock first,
so writers queue in order instead of polling in SQLite's busy handler (which sleeps up to 100 ms
between tries and lets a busy writer starve the others). On PostgreSQL the defaults
(``synchronous_commit=on``) already hold.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database"]

logger = logging.getLogger(__name__)

_WRITE = "ampflow_write"


class Database:
    """An engine and its session factory.

    Parameters
    ----------
    url : str or sqlalchemy.engine.URL
        ``sqlite:///path/to/file.db`` or ``postgresql+psycopg://user@host/db``. The directory of
        a SQLite file is created if needed.
    echo : bool, default False
        Log every statement.
    """

    def __init__(self, url: str | URL, *, echo: bool = False) -> None:
        self.url = make_url(url)
        self.engine = _make_engine(self.url, echo=echo)
        self._write_engine = self.engine.execution_options(**{_WRITE: True})
        self._read = sessionmaker(self.engine, expire_on_commit=False, autoflush=True)
        self._write = sessionmaker(self._write_engine, expire_on_commit=False, autoflush=True)
        self._write_lock = threading.RLock() if self.dialect == "sqlite" else None

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction, ended (rolled back) when the block ends.

        Objects loaded in it stay readable afterwards (closing does not expire them).
        """
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        lock = self._write_lock if self._write_lock is not None else contextlib.nullcontext()
        with lock, self._write() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def upgrade(self, revision: str = "head") -> None:
        """Run the migrations up to ``revision``."""
        from ampflow.gateway.db.migrate import upgrade

        upgrade(self.engine, revision)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"


def _make_engine(url: URL, *, echo: bool) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)
    pool: dict[str, int] = {}
    if url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        pool = {"pool_size": 10, "max_overflow": 20}
    engine = create_engine(
        url,
        echo=echo,
        connect_args={"check_same_thread": False, "timeout": 30.0},
        **pool,
    )
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (see _sqlite_begin); sqlite3 must not.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
