"""Firmware of the Nerves kind: signed per-board bundles, A/B slots, validate-or-revert.

Verbs, one module each: build, sign/verify, install (apply), validate, revert. Only the
stdlib and ``cryptography``; runs on the host (build) and on the device (install).
"""
