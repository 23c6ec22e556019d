"""``firmware install --max-boots N`` and the board's ``[slots] max_boots``: how many starts a new
slot gets to validate, stored with the trial so ``boot`` uses it; 1..10, a clear error otherwise."""
from __future__ import annotations

import json

import pytest

import boards
from boards import BoardError
from core.errors import UsageError
from edge.cli import main
from firmware.boot import boot
from firmware.install import install
from firmware.rootboard import resolve
from firmware.status import status
from tests.firmware.conftest import snapshot


def boots_until_revert(root) -> int:
    """Start the device until boot reverts; the number of trial starts it allowed."""
    trials = 0
    while (decision := boot(root))["action"] == "trial":
        trials += 1
        assert trials <= 10, decision
    assert decision["action"] == "reverted"
    return trials


def board_file(tmp_path, max_boots) -> str:
    text = (boards.BOARDS_DIR / "x86_64-generic.toml").read_text()
    text = text.replace('state = "ganglion/state.json"', f'state = "ganglion/state.json"\nmax_boots = {max_boots}')
    path = tmp_path / f"board-{max_boots}.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def first(root, make_bundle, fw_keys):
    """1.0.0 installed and made valid by hand, so later trials have a slot to revert to."""
    install(make_bundle("1.0.0"), root, fw_keys["public"])
    from firmware.validate import validate
    from firmware import selftest
    assert validate(root, runner=lambda slot, ctx: selftest.run_slot(slot))["ok"]
    return root


@pytest.mark.parametrize("max_boots", [1, 5, 10])
def test_the_trial_gets_exactly_its_max_boots(first, make_bundle, fw_keys, max_boots):
    result = install(make_bundle("1.1.0"), first, fw_keys["public"], max_boots=max_boots)
    assert result["max_boots"] == max_boots
    assert status(first)["slots"]["b"]["max_boots"] == max_boots
    assert boot(first)["max_boots"] == max_boots              # the decision says the bound it used
    assert boots_until_revert(first) == max_boots - 1        # one trial start was used just above


def test_the_bound_belongs_to_one_trial_not_to_the_root(first, make_bundle, fw_keys):
    install(make_bundle("1.1.0"), first, fw_keys["public"], max_boots=1)
    assert boots_until_revert(first) == 1
    install(make_bundle("1.2.0"), first, fw_keys["public"])
    assert boots_until_revert(first) == 3                  # the default again


@pytest.mark.parametrize("bad", [0, 11, -1])
def test_out_of_range_is_a_usage_error_before_anything_is_written(first, make_bundle, fw_keys, bad, capsys):
    bundle = make_bundle("1.1.0")
    before = snapshot(first)
    with pytest.raises(UsageError) as err:
        install(bundle, first, fw_keys["public"], max_boots=bad)
    assert err.value.code == "usage.max_boots" and "1..10" in err.value.message
    assert main(["firmware", "install", str(bundle), "--root", str(first), "--trust", str(fw_keys["public"]),
                 "--max-boots", str(bad)]) == 2
    assert "max_boots must be an integer 1..10" in capsys.readouterr().err
    assert snapshot(first) == before


def test_cli_install_max_boots_is_stored_and_used_by_cli_boot(first, make_bundle, fw_keys, capsys):
    assert main(["firmware", "install", str(make_bundle("1.1.0")), "--root", str(first),
                 "--trust", str(fw_keys["public"]), "--max-boots", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["max_boots"] == 2
    actions = []
    for _ in range(3):
        assert main(["firmware", "boot", "--root", str(first), "--json"]) == 0
        actions.append(json.loads(capsys.readouterr().out)["action"])
    assert actions == ["trial", "trial", "reverted"]


def test_the_board_sets_the_default_and_the_flag_wins(root, make_bundle, fw_keys, tmp_path):
    board = boards.load(board_file(tmp_path, 5))
    assert board.slots.max_boots == 5
    layout = resolve(root, board)
    assert install(make_bundle("1.0.0"), root, fw_keys["public"], layout=layout)["max_boots"] == 5
    other = tmp_path / "other-root"
    other.mkdir()
    result = install(make_bundle("1.0.0"), other, fw_keys["public"], layout=resolve(other, board), max_boots=2)
    assert result["max_boots"] == 2
    # later commands without --board still know the board's default (the root's record carries it)
    assert resolve(other).max_boots == 5


@pytest.mark.parametrize("value", [0, 11])
def test_a_board_file_with_max_boots_out_of_range_is_refused(tmp_path, value):
    with pytest.raises(BoardError) as err:
        boards.load(board_file(tmp_path, value))
    assert err.value.code == "board.bad_value" and "slots.max_boots" in err.value.where     # one key out of range
    assert f"slots.max_boots must be 1..10; got {value}" in err.value.message
