"""Ganglion's fleet hub (host side): a registry of devices, staged model-aware rollouts, a simulator.

    store.py     SQLite (WAL, schema_version + migrations): devices, deployments, history, changes
    registry.py  status/metrics/events records -> the in-memory device table (flushed to the store)
    plan.py      the calculator: what a deployment should do next, a pure function of data
    rollout.py   the actor that carries out a plan: transfers, reloads, verdicts (thin)
    deployments.py  operator actions: create (targets, waves), pause, resume, abort, rollback
    hub.py       `ganglion fleet serve`: MQTT in, the loop, the hub's own command topic
    control.py   the client side of the hub's command topic (deploy, status, pause, ...)
    views.py     the read API (overview, device list/detail, deployment detail, change stream)
    sim.py       `ganglion fleet simulate`: N protocol-true devices in one process
    cli.py       `ganglion fleet ...`
    errors.py    FleetError and its codes (fleet.*)

docs/fleet.md is the user's guide; the design rules are in ../shared/DESIGN.md ("Fleet hub").
"""
