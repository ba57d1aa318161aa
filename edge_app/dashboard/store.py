"""SQLite history of results, drops and device events, bounded by age, row count and file size.

Writes are buffered and committed in batches (one transaction per flush) so 30 results/s cost a
commit or two a second. The file survives restarts: the dashboard re-fills its camera cards from it.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from edge_app.errors import ConfigError

log = logging.getLogger(__name__)

Json = dict[str, Any]

DEFAULT_MAX_AGE_S = 7 * 86400.0
DEFAULT_MAX_ROWS = 500_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
MAX_PENDING = 20_000
MAX_QUERY_ROWS = 2_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, camera TEXT NOT NULL, job TEXT NOT NULL,
    seq INTEGER, status TEXT NOT NULL, label TEXT, score REAL, reason TEXT,
    latency REAL, epoch INTEGER, created REAL
);
CREATE INDEX IF NOT EXISTS results_camera_ts ON results (camera, ts);
CREATE INDEX IF NOT EXISTS results_ts ON results (ts);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_device_ts ON events (device, ts);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
"""

_RESULT_COLS = (
    "ts",
    "camera",
    "job",
    "seq",
    "status",
    "label",
    "score",
    "reason",
    "latency",
    "epoch",
    "created",
)


class HistoryStore:
    def __init__(
        self,
        path: str | Path,
        *,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = str(path)
        self.max_age_s, self.max_rows, self.max_bytes = max_age_s, max_rows, max_bytes
        self._pending_results: list[tuple[Any, ...]] = []
        self._pending_events: list[tuple[float, str, str, str]] = []
        self.lost = 0  # rows dropped because the buffer was full or a write failed
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot use {self.path} as the dashboard history: {exc}") from None
        self._db.row_factory = sqlite3.Row

    # --- writes ------------------------------------------------------------------------------
    def add_result(self, summary: Json) -> None:
        if len(self._pending_results) >= MAX_PENDING:
            self.lost += 1
            return
        row = dict(summary, camera=summary["sensor"])
        self._pending_results.append(tuple(row.get(c) for c in _RESULT_COLS))

    def add_event(self, ts: float, device: str, kind: str, detail: str = "") -> None:
        if len(self._pending_events) >= MAX_PENDING:
            self.lost += 1
            return
        self._pending_events.append((ts, device, kind, detail[:500]))

    def flush(self) -> None:
        results, events = self._pending_results, self._pending_events
        if not results and not events:
            return
        self._pending_results, self._pending_events = [], []
        marks = ",".join("?" * len(_RESULT_COLS))
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    f"INSERT INTO results ({','.join(_RESULT_COLS)}) VALUES ({marks})", results
                )
                self._db.executemany(
                    "INSERT INTO events (ts, device, kind, detail) VALUES (?,?,?,?)", events
                )
        except sqlite3.Error as exc:
            self.lost += len(results) + len(events)
            log.error(
                "dashboard history: write failed, %d rows lost: %s", len(results) + len(events), exc
            )

    def prune(self, now: float | None = None) -> int:
        """Apply the age, row and size bounds; returns the number of rows deleted."""
        self.flush()
        cutoff = (time.time() if now is None else now) - self.max_age_s
        deleted = 0
        try:
            for table in ("results", "events"):
                cur = self._db.execute(f"DELETE FROM {table} WHERE ts < ?", (cutoff,))
                deleted += cur.rowcount
                cur = self._db.execute(
                    f"DELETE FROM {table} WHERE id <= (SELECT MAX(id) FROM {table}) - ?",
                    (self.max_rows,),
                )
                deleted += cur.rowcount
            for _ in range(4):  # bounded: each round sheds what the size says is needed
                size = self.size_bytes()
                if size <= self.max_bytes:
                    break
                deleted += self._shed_oldest(min(0.9, 1.0 - 0.8 * self.max_bytes / size))
        except sqlite3.Error as exc:
            log.error("dashboard history: prune failed: %s", exc)
        return deleted

    def _shed_oldest(self, fraction: float) -> int:
        """Delete the oldest ``fraction`` of rows. No VACUUM (it would block the event loop
        for seconds on a big file): freed pages are reused by later inserts, so the file
        stays near ``max_bytes`` and :meth:`size_bytes` counts only pages in use."""
        deleted = 0
        for table in ("results", "events"):
            (count,) = self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
            cut = int(count * fraction) + 1
            cur = self._db.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id LIMIT ?)",
                (cut,),
            )
            deleted += cur.rowcount
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return deleted

    def size_bytes(self) -> int:
        """Bytes of the database's pages in use (free pages left by deletions excluded)."""
        (pages,) = self._db.execute("PRAGMA page_count").fetchone()
        (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
        (size,) = self._db.execute("PRAGMA page_size").fetchone()
        return (int(pages) - int(free)) * int(size)

    # --- reads -------------------------------------------------------------------------------
    def results(
        self,
        camera: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 200,
    ) -> list[Json]:
        """Newest first, within [since, until], optionally of one camera."""
        select = f"SELECT {','.join(_RESULT_COLS)} FROM results"
        rows = self._newest(select, ("camera", camera), since, until, limit)
        return [_result_json(r) for r in rows]

    def events(
        self,
        device: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 200,
    ) -> list[Json]:
        """Newest first, within [since, until], optionally of one device."""
        select = "SELECT ts, device, kind, detail FROM events"
        return [dict(r) for r in self._newest(select, ("device", device), since, until, limit)]

    def _newest(
        self,
        select: str,
        match: tuple[str, str | None],
        since: float | None,
        until: float | None,
        limit: int,
    ) -> list[sqlite3.Row]:
        """The rows of ``select`` newest first, filtered by time and ``column = value``
        (a None bound or value is no filter), at most ``MAX_QUERY_ROWS``."""
        self.flush()
        column, value = match
        filters = (("ts >= ?", since), ("ts <= ?", until), (f"{column} = ?", value))
        where = [clause for clause, arg in filters if arg is not None]
        args: list[Any] = [arg for _, arg in filters if arg is not None]
        sql = select + (" WHERE " + " AND ".join(where) if where else "")
        args.append(max(1, min(limit, MAX_QUERY_ROWS)))
        return self._db.execute(sql + " ORDER BY ts DESC, id DESC LIMIT ?", args).fetchall()

    def cameras(self) -> list[str]:
        self.flush()
        return [r[0] for r in self._db.execute("SELECT DISTINCT camera FROM results ORDER BY 1")]

    def recent_by_camera(self, per_camera: int) -> dict[str, list[Json]]:
        """The last ``per_camera`` results of every camera, oldest first (to warm the cards)."""
        self.flush()
        rows = self._db.execute(
            f"SELECT {','.join(_RESULT_COLS)} FROM (SELECT *, ROW_NUMBER() OVER "
            "(PARTITION BY camera ORDER BY ts DESC, id DESC) AS n FROM results) "
            "WHERE n <= ? ORDER BY ts, id",
            (per_camera,),
        )
        out: dict[str, list[Json]] = {}
        for r in rows:
            out.setdefault(r["camera"], []).append(_result_json(r))
        return out

    def count(self, table: str = "results") -> int:
        if table not in ("results", "events"):
            raise ValueError(table)
        self.flush()
        (n,) = self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(n)

    def close(self) -> None:
        self.flush()
        self._db.close()


def _result_json(row: sqlite3.Row) -> Json:
    data = {c: row[c] for c in _RESULT_COLS}
    data["sensor"] = data.pop("camera")
    return data
