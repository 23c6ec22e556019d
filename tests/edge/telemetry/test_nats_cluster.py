"""The NATS cluster fixture and the broker behaviours the MQTT 3.1.1 fallback relies on, measured
on the real nats-server (tests/fixtures/nats.py)."""
import socket

import pytest

from tests.fixtures.nats import NatsCluster, mqtt_connack

pytestmark = pytest.mark.mqtt


def test_three_nodes_on_distinct_ports_each_speaking_mqtt_311(nats_cluster):
    ports = [p for n in nats_cluster.nodes for p in (n.client_port, n.route_port, n.mqtt_port)]
    assert len(set(ports)) == 9
    for node in nats_cluster.nodes:
        assert node.running
        assert mqtt_connack(node.host, node.mqtt_port, version=4, client_id=f"t-{node.name}") == 0
        # the log proves the node bound the MQTT port we report, and routed to the cluster
        log = node.log.read_text()
        assert f"127.0.0.1:{node.mqtt_port}" in log, log[-800:]


def test_an_mqtt5_connect_is_refused_with_unsupported_protocol_version(nats_cluster):
    node = nats_cluster.nodes[1]
    # CONNACK return code 0x01: "unacceptable protocol version" (MQTT 3.1.1 section 3.2.2.3)
    assert mqtt_connack(node.host, node.mqtt_port, version=5, client_id="v5-probe") == 0x01


def test_a_port_taken_under_the_cluster_makes_it_restart_on_fresh_ports(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]

    class Unlucky(NatsCluster):
        picks = 0

        def _pick_ports(self):       # the first pick loses node 3's MQTT port to another process
            super()._pick_ports()
            self.picks += 1
            if self.picks == 1:
                self.nodes[2].mqtt_port = taken
                for node in self.nodes:
                    node.write_config([n.route_port for n in self.nodes])

    cluster = Unlucky(tmp_path / "nats").start(timeout=30)
    try:
        assert cluster.picks == 2 and taken not in [n.mqtt_port for n in cluster.nodes]
        assert all(mqtt_connack(n.host, n.mqtt_port, client_id=f"u-{n.name}") == 0 for n in cluster.nodes)
    finally:
        cluster.stop()
        busy.close()
    assert not any(n.running for n in cluster.nodes)
