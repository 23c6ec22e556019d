"""Firmware of the Nerves kind: signed per-board bundles, A/B slots, validate-or-revert.

Verbs, one module each: ``build``, ``verify`` (signing keys in ``keys``), ``install`` (apply),
``boot`` (start-up decision), ``validate``, ``revert``, ``status``; ``ota`` runs install + validate
for a bundle received over MQTT. Supporting modules: ``bundle`` (the .fw format), ``slots`` (state
behind a file or memory backend), ``wheels`` (which wheels a board gets), ``wheelinstall`` (unpack
and check them), ``selftest`` (the golden self-test), ``selfwheel`` (Ganglion's own code as a
wheel). Only the stdlib, numpy (self-test), ``cryptography`` and ``packaging`` (wheel names, tags,
PEP 440 versions); runs on the host (build) and on the device (everything else). See docs/firmware.md.
"""
