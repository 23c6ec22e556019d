"""The dashboard's operator token (stored hashed) and its --http address parsing: pure logic."""
import subprocess

import pytest

from core.errors import UsageError
from fleet.store import Store
from fleet.web import auth
from fleet.web.server import parse_address
from tests.fleet.procs import GANGLION


def test_token_is_stored_hashed_and_checked(tmp_path):
    store = Store(tmp_path / "fleet.sqlite")
    token = auth.ensure(store)
    assert token and auth.ensure(store) is None                 # generated once, then kept
    rows = store.query("SELECT salt, hash FROM operator_tokens")
    assert len(rows) == 1 and token not in str(rows)
    assert auth.check(store, token)
    assert not auth.check(store, token + "x") and not auth.check(store, None) and not auth.check(store, "")
    auth.install(store, "a-new-operator-token-123")              # --operator-token-file replaces it
    assert auth.check(store, "a-new-operator-token-123") and not auth.check(store, token)


def test_a_short_token_is_refused(tmp_path):
    with pytest.raises(UsageError) as err:
        auth.install(Store(tmp_path / "fleet.sqlite"), "short")
    assert err.value.code == "usage.operator_token"


@pytest.mark.parametrize("args, code", [(["--http", "host:99999"], "usage.http"),
                                        (["--http", "8080", "--operator-token-file", "short.token"],
                                         "usage.operator_token")])
def test_serve_refuses_bad_dashboard_options_before_opening_the_database(tmp_path, args, code):
    (tmp_path / "short.token").write_text("short\n")
    out = subprocess.run([GANGLION, "fleet", "serve", "--broker", "mqtt://127.0.0.1:1", "--db", "fleet.sqlite",
                          *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and code in out.stderr
    assert not (tmp_path / "fleet.sqlite").exists()


@pytest.mark.parametrize("text, expected", [("8080", ("127.0.0.1", 8080)), ("0.0.0.0:80", ("0.0.0.0", 80)),
                                            ("[::1]:9000", ("::1", 9000)), (":8080", ("127.0.0.1", 8080))])
def test_http_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host", "host:99999", "host:-1"])
def test_bad_http_address(text):
    with pytest.raises(UsageError):
        parse_address(text)
