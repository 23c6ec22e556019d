"""Shared test wiring. Fixtures live in tests/fixtures/, one module per concern."""
pytest_plugins = [
    "tests.fixtures.broker",   # a real mosquitto on a free loopback port
    "tests.fixtures.models",   # small ONNX models built by committed scripts
]
