"""Install refuses downgrades, reinstalls and failed versions by PEP 440 order and equality, not by
text: 1.10.0 upgrades 1.9.0, a release upgrades its own rc, '1.2' is the running '1.2.0'. The
policy is pure (a SlotState in, a refusal or none out); one real install pair closes the loop."""
from __future__ import annotations

import pytest

from firmware import selftest
from firmware.errors import InstallError
from firmware.install import check_policy, install
from firmware.slots import SlotState
from firmware.validate import validate


def running(version: str, failed: tuple[str, ...] = ()) -> SlotState:
    state = SlotState(active="a", board="x86_64-generic")
    state.slots["a"] = {"status": "valid", "version": version}
    state.failed_versions = {v: {"reason": "self-test mismatch", "class": "permanent"} for v in failed}
    return state


@pytest.mark.parametrize("current,offered", [
    ("1.9.0", "1.10.0"), ("2.9.0", "2.10.0"), ("1.2.0rc1", "1.2.0"), ("1.2.0", "1.2.0.post1"),
    ("1.2.0", "1.2.0+hotfix"), ("1.2.0a2", "1.2.0b1"),
])
def test_a_newer_version_is_accepted(current, offered):
    check_policy(running(current), offered, "x86_64-generic", force=False)


@pytest.mark.parametrize("current,offered,code", [
    ("1.10.0", "1.9.0", "firmware.downgrade"),
    ("1.2.0", "1.2.0rc1", "firmware.downgrade"),
    ("1.2.0+hotfix", "1.2.0", "firmware.downgrade"),
    ("1.2.0", "1.2", "firmware.same_version"),
    ("1.2.0rc1", "1.2.0-rc1", "firmware.same_version"),
])
def test_an_older_or_the_same_version_is_refused(current, offered, code):
    with pytest.raises(InstallError) as info:
        check_policy(running(current), offered, "x86_64-generic", force=False)
    assert info.value.code == code
    check_policy(running(current), offered, "x86_64-generic", force=True)    # on purpose: allowed


@pytest.mark.parametrize("failed,offered", [("1.3.0", "1.3.0"), ("1.3", "1.3.0"), ("1.3.0rc1", "1.3.0-rc1")])
def test_a_failed_version_is_refused_in_any_spelling(failed, offered):
    with pytest.raises(InstallError) as info:
        check_policy(running("1.0.0", failed=(failed, "garbage")), offered, "x86_64-generic", force=False)
    assert info.value.code == "firmware.failed_version"


def test_real_bundles_upgrade_from_1_9_to_1_10_and_build_writes_the_normal_form(root, make_bundle, fw_keys):
    install(make_bundle("1.9.0"), root, fw_keys["public"])
    assert validate(root, runner=lambda slot, ctx: selftest.run_slot(slot))["ok"]
    result = install(make_bundle("1.10.0-rc1"), root, fw_keys["public"])
    assert result["version"] == "1.10.0rc1"
