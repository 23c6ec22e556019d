"""Picking wheels from a wheelhouse: one per distribution, the newest by PEP 440 (not by file name),
and names that are not wheels refused with the typed error. Tag matching per board is in
test_boards_bundles.py."""
from __future__ import annotations

import pytest

import boards
from firmware.errors import BuildError
from firmware.wheels import WheelName, from_wheelhouses
from tests.firmware import helpers

RPI4 = "cp311-cp311-manylinux_2_28_aarch64"


def house(folder, *names: str):
    """A wheelhouse of real (tiny, pure) wheels: (name, version, tag) triples as 'name version tag'."""
    for entry in names:
        name, version, tag = entry.split()
        helpers.make_wheel(folder, name, version, {f"{name}/__init__.py": ""}, tag=tag)
    return folder


def picked(folders, board="rpi4") -> list[str]:
    return [p.name for p in from_wheelhouses(boards.load(board), folders)]


@pytest.mark.parametrize("versions,newest", [
    (["2.9.0", "2.10.0"], "2.10.0"),                 # as text, "2.9.0" > "2.10.0"
    (["2.10.0", "2.9.0", "2.10.0rc1"], "2.10.0"),    # a pre-release is older than its release
    (["2.10.0rc1", "2.9.0"], "2.10.0rc1"),           # ... and newer than the release before
    (["2.10.0", "2.10.0.post1"], "2.10.0.post1"),
    (["2.10.0+local", "2.10.0"], "2.10.0+local"),    # a local version sorts after its public one
    (["1!1.0", "2.10.0"], "1!1.0"),                  # an epoch outranks every release number
])
def test_the_newest_version_by_pep440_is_picked(tmp_path, versions, newest):
    house(tmp_path, *(f"numpy {v} {RPI4}" for v in versions))
    assert picked([tmp_path]) == [f"numpy-{newest}-{RPI4}.whl"]


def test_a_wheel_that_does_not_fit_never_wins_by_being_newer(tmp_path):
    house(tmp_path, f"numpy 2.9.0 {RPI4}", "numpy 2.10.0 cp312-cp312-manylinux_2_28_aarch64",
          "numpy 2.11.0 cp311-cp311-manylinux_2_34_x86_64")
    assert picked([tmp_path]) == [f"numpy-2.9.0-{RPI4}.whl"]


def test_at_one_version_the_most_specific_tag_and_the_higher_build_win(tmp_path):
    house(tmp_path / "tags", "probe 1.0 py3-none-any", "probe 1.0 cp310-abi3-manylinux2014_aarch64",
          f"probe 1.0 {RPI4}")
    assert picked([tmp_path / "tags"]) == [f"probe-1.0-{RPI4}.whl"]
    builds = tmp_path / "builds"
    house(builds, "probe 1.0 py3-none-any")
    (builds / "probe-1.0-2-py3-none-any.whl").write_bytes((builds / "probe-1.0-py3-none-any.whl").read_bytes())
    (builds / "probe-1.0-10-py3-none-any.whl").write_bytes((builds / "probe-1.0-py3-none-any.whl").read_bytes())
    assert picked([builds]) == ["probe-1.0-10-py3-none-any.whl"]


def test_spellings_of_one_distribution_are_one_distribution_across_folders(tmp_path):
    house(tmp_path / "a", f"ai_edge_litert 2.9.0 {RPI4}", "probe 1.0 py3-none-any")
    house(tmp_path / "b", f"ai.edge.litert 2.10.0 {RPI4}")
    assert sorted(picked([tmp_path / "a", tmp_path / "b"])) == [f"ai.edge.litert-2.10.0-{RPI4}.whl",
                                                                "probe-1.0-py3-none-any.whl"]


@pytest.mark.parametrize("filename", [
    "numpy-2.9.0.whl",                                  # no tags
    "numpy-two-cp311-cp311-manylinux_2_28_aarch64.whl",  # not a PEP 440 version
    "numpy-2.9.0-cp311-cp311-manylinux_2_28_aarch64.zip",
    "numpy-2.9.0-x-cp311-cp311-manylinux_2_28_aarch64.whl",   # a build tag must start with a digit
    "../numpy-2.9.0-cp311-cp311-manylinux_2_28_aarch64.whl",
    "numpy-2.9.0-py3-none-..whl",
    ".numpy-2.9.0-py3-none-any.whl",
    "num py-2.9.0-py3-none-any.whl",
])
def test_a_name_that_is_not_a_wheel_gets_the_typed_error(filename):
    with pytest.raises(BuildError) as info:
        WheelName.parse(filename)
    assert info.value.code == "firmware.wheel_name"


def test_a_malformed_name_in_a_wheelhouse_stops_the_pick(tmp_path):
    house(tmp_path, f"numpy 2.9.0 {RPI4}")
    (tmp_path / "numpy-latest.whl").write_bytes(b"")
    with pytest.raises(BuildError) as info:
        picked([tmp_path])
    assert info.value.code == "firmware.wheel_name" and "numpy-latest.whl" in info.value.message


def test_parsed_names_are_canonical_and_versions_are_pep440():
    wheel = WheelName.parse("AI_Edge_LiteRT-2.10.0rc1-cp311-cp311-manylinux_2_28_aarch64.whl")
    assert wheel.name == "ai-edge-litert" and str(wheel.version) == "2.10.0rc1"
    assert wheel.version.is_prerelease and wheel.version > WheelName.parse(f"x-2.9.0-{RPI4}.whl").version
