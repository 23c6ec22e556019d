"""The hub's database: SQLite in WAL mode, one writer (the hub's loop), migrations by number.

Tables (schema version 3):

    devices             one row per device id: identity, versions, online state, tags, health
    deployments         one row per rollout: artifact, target set, waves, thresholds, state
    deployment_devices  one row per (deployment, device): wave, state, previous model, baseline
    history             per-device log of what was deployed or rolled back, when, and why it failed
    changes             the change stream (id-ordered) a dashboard tails: ``changes_since(id)``
    operator_tokens     the dashboard's operator token, scrypt-hashed (fleet/web/auth.py)

Durability: every deployment transition is committed before the hub acts on it, so a hub killed
with SIGKILL restarts from the database (``synchronous=FULL``). Device rows are last values the
broker re-sends anyway (retained status, periodic metrics): the registry flushes them in batches.
A newer migration is appended to ``MIGRATIONS``; ``open_store`` applies what a file lacks, in
order, each in one transaction, and refuses a file from a newer hub.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from fleet.errors import StoreError

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE devices (
        id TEXT PRIMARY KEY, board TEXT, model TEXT, model_version TEXT, model_sha256 TEXT,
        firmware_version TEXT, online INTEGER NOT NULL DEFAULT 0, last_seen REAL, metrics_at REAL,
        tags TEXT NOT NULL DEFAULT '{}', health TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL DEFAULT '{}');
    CREATE TABLE deployments (
        id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL, artifact TEXT NOT NULL,
        sha256 TEXT NOT NULL, name TEXT, version TEXT, target TEXT NOT NULL, waves TEXT NOT NULL,
        max_failures REAL NOT NULL, concurrency INTEGER NOT NULL, shadow INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL, wave INTEGER NOT NULL DEFAULT 0, rollback TEXT NOT NULL DEFAULT 'none',
        reason TEXT);
    CREATE TABLE deployment_devices (
        deployment TEXT NOT NULL, device TEXT NOT NULL, ord INTEGER NOT NULL, wave INTEGER NOT NULL,
        state TEXT NOT NULL, previous TEXT, baseline TEXT, shadow TEXT, sent_at REAL, done_at REAL, error TEXT,
        PRIMARY KEY (deployment, device));
    CREATE INDEX dd_device ON deployment_devices(device);
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, device TEXT NOT NULL,
        deployment TEXT, action TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '{}');
    CREATE INDEX history_device ON history(device, id);
    CREATE TABLE changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, kind TEXT NOT NULL, ref TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}');
    """,
    # 2: transfers retried after no answer (rollout.MAX_ATTEMPTS)
    "ALTER TABLE deployment_devices ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
    # 3: the dashboard's operator token, stored hashed (fleet/web/auth.py)
    "CREATE TABLE operator_tokens (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, "
    "salt TEXT NOT NULL, hash TEXT NOT NULL)",
    # 4: firmware deployments (.fw bundles) and the last firmware slot event per device
    "ALTER TABLE deployments ADD COLUMN kind TEXT NOT NULL DEFAULT 'model'; "
    "ALTER TABLE devices ADD COLUMN firmware TEXT",
]
KEEP_CHANGES = 20_000          # the change stream is a tail, not an archive (history is the archive)
DEVICE_COLUMNS = ("id", "board", "model", "model_version", "model_sha256", "firmware_version", "online",
                  "last_seen", "metrics_at", "tags", "health", "status", "firmware")
JSON_COLUMNS = {"tags", "health", "status", "target", "waves", "baseline", "shadow", "detail", "data", "firmware"}


class Store:
    """One connection shared under a lock: the hub's loop writes, control handlers read."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._lock = threading.RLock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.version = self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the fleet database: {exc}", where=self.path,
                             hint="check that the folder is writable and the file is a Ganglion fleet database") from None

    def _migrate(self) -> int:
        self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self.db.execute("SELECT version FROM schema_version").fetchone()
        current = row[0] if row else 0
        if current > len(MIGRATIONS):
            raise StoreError(f"the database has schema {current}, this hub knows up to {len(MIGRATIONS)}",
                             where=self.path, hint="run a newer ganglion, or point --db at another file")
        for number in range(current + 1, len(MIGRATIONS) + 1):
            with self.transaction():
                for statement in MIGRATIONS[number - 1].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute("DELETE FROM schema_version")
                self.db.execute("INSERT INTO schema_version(version) VALUES (?)", (number,))
        return len(MIGRATIONS)

    def transaction(self):
        return _Transaction(self)

    # -- writes (the hub loop) -------------------------------------------------------------------
    def upsert_devices(self, rows: list[dict]) -> None:
        if not rows:
            return
        cols = ", ".join(DEVICE_COLUMNS)
        marks = ", ".join("?" for _ in DEVICE_COLUMNS)
        updates = ", ".join(f"{c}=excluded.{c}" for c in DEVICE_COLUMNS[1:])
        with self.transaction():
            self.db.executemany(f"INSERT INTO devices({cols}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {updates}",
                                [tuple(_dump(c, row.get(c)) for c in DEVICE_COLUMNS) for row in rows])

    def insert(self, table: str, row: dict) -> int:
        cols = list(row)
        with self._lock:
            cur = self.db.execute(f"INSERT INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                                  [_dump(c, row[c]) for c in cols])
            return cur.lastrowid

    def update(self, table: str, where: dict, values: dict) -> None:
        sets = ", ".join(f"{c}=?" for c in values)
        cond = " AND ".join(f"{c}=?" for c in where)
        with self._lock:
            self.db.execute(f"UPDATE {table} SET {sets} WHERE {cond}",
                            [_dump(c, v) for c, v in values.items()] + list(where.values()))

    def change(self, kind: str, ref: str, data: dict | None = None) -> int:
        """Append to the change stream (and trim its tail now and then)."""
        cid = self.insert("changes", {"ts": time.time(), "kind": kind, "ref": ref, "data": data or {}})
        if cid % 1000 == 0:
            with self._lock:
                self.db.execute("DELETE FROM changes WHERE id <= ?", (cid - KEEP_CHANGES,))
        return cid

    # -- reads -------------------------------------------------------------------------------------
    def query(self, sql: str, params=()) -> list[dict]:
        with self._lock:
            rows = self.db.execute(sql, params).fetchall()
        return [{k: _load(k, row[k]) for k in row.keys()} for row in rows]

    def close(self) -> None:
        with self._lock:
            self.db.close()


class _Transaction:
    """``with store.transaction():`` BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), re-entrant."""

    def __init__(self, store: Store):
        self.store = store
        self.outer = False

    def __enter__(self):
        self.store._lock.acquire()
        self.outer = not self.store.db.in_transaction
        if self.outer:
            self.store.db.execute("BEGIN IMMEDIATE")
        return self.store

    def __exit__(self, exc_type, *rest):
        try:
            if self.outer:
                self.store.db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.store._lock.release()


def _dump(column: str, value):
    return json.dumps(value, sort_keys=True) if column in JSON_COLUMNS and value is not None else value


def _load(column: str, value):
    return json.loads(value) if column in JSON_COLUMNS and isinstance(value, str) else value
