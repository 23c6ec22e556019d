"""Ganglion's device side: model backends, the supervised daemon, MQTT telemetry.

Nothing in this package imports ``converters`` or ``onnx``: a device has neither.
``tests/test_boundaries.py`` holds that line.
"""

