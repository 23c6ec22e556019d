"""Shared test wiring. Fixtures live in tests/fixtures/, one module per concern."""
pytest_plugins = [
    "tests.fixtures.broker",   # a real mosquitto on a free loopback port
    "tests.fixtures.nats",     # a real 3-node NATS JetStream cluster (MQTT 3.1.1) on loopback
    "tests.fixtures.models",   # small ONNX models built by committed scripts
]
