"""Hostile or damaged bundles are refused before any byte is written under the install root.

Each case starts from a root with a validated install, so "byte-identical before/after" covers a
live slot, the other slot and the state file. Codes are asserted so a refusal for the wrong
reason (e.g. a crash) does not pass.
"""
from __future__ import annotations

import random
import tarfile

import pytest

from core.errors import FirmwareError
from firmware import selftest
from firmware.install import install
from firmware.validate import validate
from tests.firmware import tarcraft
from tests.firmware.conftest import snapshot


def in_process(slot, ctx):
    return selftest.run_slot(slot)


@pytest.fixture
def live_root(root, make_bundle, fw_keys):
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    assert validate(root, runner=in_process)["ok"]
    return root


def refused(bundle, root, trust, code_prefix: str):
    before = snapshot(root)
    with pytest.raises(FirmwareError) as info:
        install(bundle, root, trust)
    assert info.value.code.startswith(code_prefix), info.value.render()
    assert snapshot(root) == before
    return info.value


@pytest.mark.parametrize("where", ["manifest.json", "signature", "artifact/model-1.1.0.gpk",
                                   "selftest/expected.npz", "wheels/ganglion_probe-1.0-py3-none-any.whl"])
def test_one_flipped_bit_in_any_member_is_refused(live_root, make_bundle, fw_keys, tmp_path, where):
    good = make_bundle("1.1.0")
    with tarfile.open(good, "r:") as tar:
        info = tar.getmember(where)
    data = bytearray(good.read_bytes())
    data[info.offset_data + info.size // 2] ^= 0x04
    bad = tmp_path / "flipped.fw"
    bad.write_bytes(bytes(data))
    refused(bad, live_root, fw_keys["public"], ("firmware" if where != "signature" and where != "manifest.json"
                                                 else "signature"))


def test_random_bit_flips_are_refused_or_change_nothing_that_is_installed(tmp_path, make_bundle, fw_keys):
    """Anywhere in the file: the install is refused, or the flip hit tar padding and what lands on
    disk is exactly what the untouched bundle installs (the property that matters)."""
    good = make_bundle("1.0.0")
    reference_root = tmp_path / "reference"
    install(good, reference_root, fw_keys["public"])
    reference = {k: v for k, v in snapshot(reference_root).items() if "state.json" not in k}
    original = good.read_bytes()
    rng = random.Random(1234)
    outcomes = {"refused": 0, "harmless": 0}
    for trial in range(40):
        data = bytearray(original)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        bad = tmp_path / f"flip-{trial}.fw"
        bad.write_bytes(bytes(data))
        root = tmp_path / f"root-{trial}"
        root.mkdir()
        try:
            install(bad, root, fw_keys["public"])
        except FirmwareError:
            outcomes["refused"] += 1
            assert snapshot(root) == {}
            continue
        outcomes["harmless"] += 1
        assert {k: v for k, v in snapshot(root).items() if "state.json" not in k} == reference
    assert outcomes["refused"] > 0


def test_unsigned_bundle_is_refused(live_root, make_bundle, fw_keys, tmp_path):
    entries = [e for e in tarcraft.read_entries(make_bundle("1.1.0")) if e[0].name != "signature"]
    bad = tarcraft.write_entries(tmp_path / "unsigned.fw", entries)
    assert refused(bad, live_root, fw_keys["public"], "signature.missing")


def test_bundle_signed_by_an_untrusted_key_is_refused(live_root, make_bundle, fw_keys):
    bad = make_bundle("1.1.0", key=fw_keys["other_private"])
    refused(bad, live_root, fw_keys["public"], "signature.invalid")


def test_replayed_older_version_is_refused_even_though_its_signature_is_valid(live_root, make_bundle,
                                                                               fw_keys):
    install(make_bundle("1.2.0"), live_root, fw_keys["public"])
    assert validate(live_root, runner=in_process)["ok"]
    old = make_bundle("1.1.0")
    refused(old, live_root, fw_keys["public"], "firmware.downgrade")
    install(old, live_root, fw_keys["public"], force=True)   # on purpose, it is allowed


@pytest.mark.parametrize("name,code", [
    ("../evil.txt", "firmware.unsafe_path"),
    ("wheels/../../evil.txt", "firmware.unsafe_path"),
    ("/etc/evil.txt", "firmware.unsafe_path"),
    ("artifact/nested/evil.txt", "firmware.unsafe_path"),
    ("elsewhere/evil.txt", "firmware.unsafe_path"),
    ("wheels/./x.whl", "firmware.unsafe_path"),
])
def test_path_escapes_are_refused_even_when_signed_by_the_trusted_key(live_root, make_bundle, fw_keys,
                                                                        tmp_path, name, code):
    entries = tarcraft.read_entries(make_bundle("1.1.0"))
    entries.append(tarcraft.file_entry(name, b"owned\n"))
    bad = tarcraft.write_entries(tmp_path / "escape.fw", tarcraft.resign(entries, fw_keys["private"]))
    refused(bad, live_root, fw_keys["public"], code)
    assert not (live_root.parent / "evil.txt").exists()


@pytest.mark.parametrize("kind,linkname", [
    (tarfile.SYMTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "config/daemon.toml"),
    (tarfile.CHRTYPE, ""), (tarfile.BLKTYPE, ""), (tarfile.FIFOTYPE, ""), (tarfile.DIRTYPE, ""),
])
def test_links_devices_and_folders_in_the_archive_are_refused(live_root, make_bundle, fw_keys, tmp_path,
                                                              kind, linkname):
    entries = tarcraft.read_entries(make_bundle("1.1.0"))
    entries.insert(2, tarcraft.special_entry("wheels/special.whl", kind, linkname))
    bad = tarcraft.write_entries(tmp_path / "special.fw", tarcraft.resign(entries, fw_keys["private"]))
    refused(bad, live_root, fw_keys["public"], "firmware.unsafe_member")


def test_a_duplicate_member_cannot_smuggle_a_second_version(live_root, make_bundle, fw_keys, tmp_path):
    entries = tarcraft.read_entries(make_bundle("1.1.0"))
    entries.append(tarcraft.file_entry("config/daemon.toml", b"evil = true\n"))
    bad = tarcraft.write_entries(tmp_path / "dup.fw", entries)
    refused(bad, live_root, fw_keys["public"], "firmware.duplicate_member")


def test_a_member_not_in_the_signed_manifest_is_refused(live_root, make_bundle, fw_keys, tmp_path):
    entries = tarcraft.read_entries(make_bundle("1.1.0"))
    entries.append(tarcraft.file_entry("config/extra.toml", b"x = 1\n"))
    bad = tarcraft.write_entries(tmp_path / "extra.fw", entries)
    refused(bad, live_root, fw_keys["public"], "firmware.members")


def test_a_truncated_bundle_is_refused(live_root, make_bundle, fw_keys, tmp_path):
    path = make_bundle("1.1.0")
    good = path.read_bytes()
    with tarfile.open(path, "r:") as tar:
        last = tar.getmembers()[-1]
    # the tail past the last member's data is zero padding; a cut there loses nothing
    for cut in (100, len(good) // 3, last.offset_data + last.size // 2):
        bad = tmp_path / f"cut-{cut}.fw"
        bad.write_bytes(good[:cut])
        refused(bad, live_root, fw_keys["public"], "firmware")


def test_not_a_bundle_at_all_is_refused(live_root, fw_keys, tmp_path):
    bad = tmp_path / "noise.fw"
    bad.write_bytes(random.Random(5).randbytes(10000))
    refused(bad, live_root, fw_keys["public"], "firmware")


def test_a_bundle_for_another_board_is_refused_even_with_force(live_root, make_bundle, fw_keys):
    other = make_bundle("1.1.0", board="qemu-aarch64")
    before = snapshot(live_root)
    with pytest.raises(FirmwareError) as info:
        install(other, live_root, fw_keys["public"], force=True, cross=True)   # cross: past the machine check
    assert info.value.code == "firmware.wrong_board"
    assert snapshot(live_root) == before


@pytest.mark.parametrize("entry", ["../../escape.py", "/abs/escape.py", "pkg/../../escape.py", "symlink"])
def test_a_hostile_wheel_inside_a_signed_bundle_is_refused_before_any_write(live_root, make_bundle, fw_keys,
                                                                            tmp_path, entry):
    import io
    import stat
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("evil-1.0.dist-info/RECORD", "")
        if entry == "symlink":
            info = zipfile.ZipInfo("evil/link.py")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
        else:
            zf.writestr(entry, "owned = True\n")
    entries = tarcraft.read_entries(make_bundle("1.1.0"))
    entries.append(tarcraft.file_entry("wheels/evil-1.0-py3-none-any.whl", buf.getvalue()))
    bad = tarcraft.write_entries(tmp_path / "evil-wheel.fw", tarcraft.resign(entries, fw_keys["private"]))
    refused(bad, live_root, fw_keys["public"], "firmware.unsafe")


@pytest.mark.parametrize("swap", ["altered", "extra", "truncated"])
def test_a_bundle_swapped_between_verify_and_write_is_caught(live_root, make_bundle, fw_keys, tmp_path, swap,
                                                            monkeypatch):
    """Time-of-check/time-of-use: the file is replaced right after verification; the re-hash during
    staging catches it, the staging folder is removed and the live slots stay as they were."""
    import shutil
    from firmware import install as install_mod
    good = make_bundle("1.1.0")
    entries = tarcraft.read_entries(good)
    if swap == "altered":
        entries = [(i, (d[:-1] + b"#") if i.name == "config/daemon.toml" else d) for i, d in entries]
    elif swap == "extra":
        entries.append(tarcraft.file_entry("config/extra.toml", b"x = 1\n"))
    else:
        entries = entries[:-1]
    evil = tarcraft.write_entries(tmp_path / "evil.fw", entries)
    target = tmp_path / "swapped.fw"
    shutil.copy(good, target)
    real_verify = install_mod.verify

    def verify_then_swap(bundle, trusted):
        manifest = real_verify(bundle, trusted)
        shutil.copy(evil, target)
        return manifest
    before = snapshot(live_root)
    monkeypatch.setattr(install_mod, "verify", verify_then_swap)
    with pytest.raises(FirmwareError) as info:
        install(target, live_root, fw_keys["public"])
    assert info.value.code == "firmware.hash"
    assert snapshot(live_root) == before


def test_a_second_signature_member_is_refused(live_root, make_bundle, fw_keys, tmp_path):
    entries = tarcraft.read_entries(make_bundle("1.1.0"))
    signature = next(d for i, d in entries if i.name == "signature")
    entries.append(tarcraft.file_entry("signature", signature))
    bad = tarcraft.write_entries(tmp_path / "two-signatures.fw", entries)
    refused(bad, live_root, fw_keys["public"], "firmware.duplicate_member")


def test_a_bundle_for_another_architecture_is_refused_before_anything_is_written(live_root, make_bundle,
                                                                                 fw_keys):
    """Issue 9: an aarch64 bundle unpacked fine on x86_64, failed its self-test and was refused for
    good. The bundle says its architecture and Python: install checks them against this machine."""
    bundle = make_bundle("1.1.0", board="rpi4")                      # aarch64
    refused(bundle, live_root, fw_keys["public"], "firmware.wrong_machine")
    with pytest.raises(FirmwareError) as info:
        install(bundle, live_root, fw_keys["public"])
    assert "aarch64" in info.value.message and "--cross" in info.value.hint
