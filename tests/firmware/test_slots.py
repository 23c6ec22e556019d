"""Unit tests of the slot state document and its backends (memory and file behave the same)."""
from __future__ import annotations

import json
import os

import pytest

from firmware.errors import SlotError
from firmware.slots import (HISTORY_LIMIT, FileStateBackend, MemoryStateBackend, SlotState,
                            find_version, parse_version, version_order)
from firmware import wheelinstall
from tests.firmware import helpers


@pytest.fixture(params=["memory", "file"])
def backend(request, tmp_path):
    return MemoryStateBackend() if request.param == "memory" else FileStateBackend(tmp_path / "s/state.json")


def test_fresh_state_has_no_active_slot_and_installs_into_a(backend):
    state = backend.load()
    assert state.active is None and state.inactive() == "a" and state.active_version() is None


def test_state_round_trips_through_the_backend(backend):
    state = SlotState(active="b", previous="a", board="rpi4")
    state.slots["b"] = {"status": "unvalidated", "version": "1.2.0", "boot_count": 2}
    state.slots["a"] = {"status": "valid", "version": "1.1.0"}
    state.failed_versions["1.0.5"] = {"reason": "selftest"}
    state.note("installed", slot="b")
    backend.save(state)
    again = backend.load()
    assert again.to_dict() == state.to_dict()
    assert again.inactive() == "a" and again.active_version() == "1.2.0"


def test_history_is_bounded():
    state = SlotState()
    for n in range(HISTORY_LIMIT + 20):
        state.note("x", n=n)
    assert len(state.history) == HISTORY_LIMIT and state.history[-1]["n"] == HISTORY_LIMIT + 19


@pytest.mark.parametrize("bad", [
    {"active": "c", "slots": {"a": {"status": "empty"}, "b": {"status": "empty"}}},
    {"active": "a", "slots": {"a": {"status": "weird"}, "b": {"status": "empty"}}},
    {"active": "a", "slots": {"a": {"status": "valid"}}},
    {"slots": {}},
])
def test_malformed_state_documents_are_refused(tmp_path, bad):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(SlotError) as info:
        FileStateBackend(path).load()
    assert info.value.code == "firmware.state"


def test_file_backend_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    backend = FileStateBackend(tmp_path / "state.json")
    for n in range(5):
        backend.save(SlotState(active="a", board=f"b{n}"))
    assert os.listdir(tmp_path) == ["state.json"]
    assert backend.load().board == "b4"


@pytest.mark.parametrize("low,high", [
    ("1.9.0", "1.10.0"), ("2.9.0", "2.10.0"), ("1", "1.0.1"), ("0.9.9.9", "1.0"), ("2.0", "10.0"),
    ("1.2.0rc1", "1.2.0"), ("1.2.0a1", "1.2.0b1"), ("1.2.0.dev1", "1.2.0a1"),   # pre-releases first
    ("1.2.0", "1.2.0.post1"), ("1.2.0", "1.2.0+local"), ("1.2.0+local", "1.2.1rc1"),
    ("1.2.0+build.2", "1.2.0+build.10"), ("9.0", "1!0.1"),
])
def test_versions_order_as_pep440_says(low, high):
    assert parse_version(low) < parse_version(high)
    assert sorted([high, low], key=version_order) == [low, high]


@pytest.mark.parametrize("one,other", [("1.2", "1.2.0.0"), ("1.2.0-rc1", "1.2.0rc1"), ("v1.2", "1.2"),
                                       ("1.2.0+Local", "1.2.0+local")])
def test_spellings_of_one_version_are_equal(one, other):
    assert parse_version(one) == parse_version(other)
    assert find_version({other: {}}, one) == other


@pytest.mark.parametrize("text", ["", "1..2", "one.two", "1.2.3-beta-beta", " 1.2", "1.2\n", "latest", None, 1.2])
def test_versions_that_are_not_pep440_are_refused(text):
    with pytest.raises(SlotError) as info:
        parse_version(text)
    assert info.value.code == "firmware.version"


def test_unparsable_keys_in_a_hand_edited_state_never_match_and_sort_last():
    assert find_version({"garbage": {}, "1.0": {}}, "1.0.0") == "1.0"
    assert find_version({"garbage": {}}, "1.0.0") is None
    assert sorted(["garbage", "1.10.0", "1.9.0"], key=version_order) == ["1.9.0", "1.10.0", "garbage"]


def test_wheel_data_folders_go_where_pip_would_put_them(tmp_path):
    wheel = helpers.make_wheel(tmp_path / "wh", "datapkg", "1.0", {
        "datapkg/__init__.py": "A = 1\n",
        "datapkg-1.0.data/platlib/datapkg_native.py": "B = 2\n",
        "datapkg-1.0.data/scripts/datapkg-cli": "#!/bin/sh\necho hi\n",
        "datapkg-1.0.data/headers/datapkg.h": "int x;\n",
    })
    slot = tmp_path / "slot"
    dist_info = wheelinstall.unpack(wheel, slot, "test")
    assert dist_info == "datapkg-1.0.dist-info"
    assert (slot / "site/datapkg_native.py").read_text() == "B = 2\n"
    assert (slot / "bin/datapkg-cli").exists()
    assert not list(slot.rglob("datapkg.h"))
    assert wheelinstall.check(slot, dist_info) == []
    (slot / "site/datapkg_native.py").write_text("B = 3\n")
    assert wheelinstall.check(slot, dist_info) == ["datapkg-1.0.data/platlib/datapkg_native.py: altered"]
    (slot / "site/datapkg/__init__.py").unlink()
    assert "datapkg/__init__.py: missing" in wheelinstall.check(slot, dist_info)
