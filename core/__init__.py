"""Ganglion's core: what every other package builds on, and nothing above it.

    errors.py     the root GanglionError, the code families and the one exit-code table
    keys.py       ed25519 keys: generate, load, sign, verify (the one ``cryptography`` user)
    artifact.py   the .gpk format: pack / write, read and verify
    litert.py     find the LiteRT interpreter and build one (the converter's self-check and the device)
    vocab.py      the CLI vocabulary (option decorators every command declares)
    config/       the typed configuration schema: boards, the daemon, telemetry

Layers (tests/test_boundaries.py holds them): core <- edge <- firmware <- fleet; converters and
boards import core only. Nothing here imports edge, firmware, boards, converters or fleet.
"""
__version__ = "0.1.0"
