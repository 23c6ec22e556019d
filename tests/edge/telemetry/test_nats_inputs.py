"""Inputs queued for an offline device survive a lagging NATS replica, whoever else reads the
device's topics the way Ganglion's consumers do (tests/edge/telemetry/nats_scenarios.py says why
a QoS 1 subscription of ``ganglion/v1/<dev>/#`` is not among them: on nats-server 2.9.10 it takes
the device's inputs; bench/nats_inputs_bench.py measures that)."""
import pytest

from tests.edge.telemetry.nats_scenarios import queued_inputs

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(240)]
N_INPUTS = 60


@pytest.mark.parametrize("other", ["alone", "records-qos1", "everything-qos0"])
def test_an_offline_device_gets_every_queued_input_through_a_lagging_replica(nats_cluster, other):
    got = queued_inputs(nats_cluster, f"queued-{other}", other, N_INPUTS)
    assert got == {b"input %d" % i for i in range(N_INPUTS)}, f"{N_INPUTS - len(got)} inputs lost"
