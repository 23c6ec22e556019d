"""The hub database: migrations by number, a newer file refused, transactions roll back on error."""
import sqlite3

import pytest

from fleet import store as store_mod
from fleet.errors import StoreError
from fleet.store import Store


def test_new_file_gets_every_migration_and_reopens(tmp_path):
    db = Store(tmp_path / "f.sqlite")
    assert db.version == len(store_mod.MIGRATIONS)
    db.upsert_devices([{"id": "cam1", "online": True, "tags": {"site": "a"}, "health": {}, "status": {}}])
    db.close()
    again = Store(tmp_path / "f.sqlite")
    assert again.query("SELECT id, tags FROM devices") == [{"id": "cam1", "tags": {"site": "a"}}]
    assert again.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"


def test_a_later_migration_applies_to_an_old_file(tmp_path, monkeypatch):
    Store(tmp_path / "f.sqlite").close()
    monkeypatch.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS + ["ALTER TABLE devices ADD COLUMN site TEXT"])
    db = Store(tmp_path / "f.sqlite")
    assert db.version == len(store_mod.MIGRATIONS)
    assert "site" in {r["name"] for r in db.query("PRAGMA table_info(devices)")}


def test_a_file_from_a_newer_hub_is_refused(tmp_path):
    Store(tmp_path / "f.sqlite").close()
    con = sqlite3.connect(tmp_path / "f.sqlite")
    con.execute("UPDATE schema_version SET version=99")
    con.commit()
    con.close()
    with pytest.raises(StoreError) as info:
        Store(tmp_path / "f.sqlite")
    assert info.value.code == "fleet.store" and "99" in info.value.message


def test_transaction_rolls_back_on_error(tmp_path):
    db = Store(tmp_path / "f.sqlite")
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.change("device", "cam1")
            raise RuntimeError("boom")
    assert db.query("SELECT COUNT(*) AS n FROM changes") == [{"n": 0}]
