"""Fixtures of the fleet scenarios: ``procs``, the hub and simulator processes of one test."""
import pytest

from tests.fleet.procs import Procs


@pytest.fixture
def procs(tmp_path, mosquitto):
    """Every process the test starts, stopped at the end (by PID)."""
    p = Procs(tmp_path, mosquitto.url)
    try:
        yield p
    except BaseException:
        print(p.logs())
        raise
    finally:
        p.stop_all()
