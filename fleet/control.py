"""How clients reach the hub: commands on the hub's own topic, through the broker (no extra port).

The hub answers the same command protocol devices do (edge/telemetry/commands.py) under the
reserved id ``_fleet`` -- a leading underscore, which no device id may have, so it can never clash
with a device: ``command_topic("_fleet", verb)``. Replies come back on the caller's requester
topic (MQTT 5 response topic, or ``reply_to``/``corr`` in the signed JSON under MQTT 3.1.1).

    deploy.begin/.chunk/.commit   the artifact, uploaded as a chunked transfer; commit's args carry
                                  the options (to, waves, max_failures, concurrency, shadow)
    status {"id"?}                one deployment (default: the newest), or {"list": true}
    pause|resume|abort|rollback {"id"?}
    overview, devices {filters}, device {"id"}, changes {"since", "limit"}

With ``serve --operator-key PUB`` every command must be signed (``--signing-key`` here), as for
devices. Errors come back as the hub raised them (``usage.*`` exits 2, ``fleet.*`` exits 6).
"""
from __future__ import annotations

from pathlib import Path

from core.errors import error_from_dict
from edge.telemetry.errors import TelemetryError
from edge.telemetry.requester import Requester
from fleet.errors import FleetError

HUB_ID = "_fleet"


class HubClient:
    def __init__(self, broker: str | list, *, key=None, timeout: float = 30.0, **connection):
        self.key, self.timeout = key, timeout
        self.requester = Requester(broker, **connection)

    def __enter__(self) -> "HubClient":
        self.requester.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.requester.__exit__(*exc)

    def call(self, verb: str, args: dict | None = None) -> dict:
        try:
            reply = self.requester.call(HUB_ID, verb, args or {}, key=self.key, timeout=self.timeout, retries=2)
        except TelemetryError as exc:
            raise _no_hub(exc) from None
        return _result(reply)

    def deploy(self, artifact: str | Path, options: dict) -> dict:
        try:
            reply = self.requester.send_file(HUB_ID, "deploy", artifact, args=options, key=self.key,
                                             timeout=self.timeout)
        except TelemetryError as exc:
            if exc.code != "telemetry.timeout":
                raise error_from_dict(exc.to_dict(), default=FleetError) from None
            raise _no_hub(exc) from None
        return _result(reply)


def _result(reply: dict) -> dict:
    if not reply.get("ok"):
        raise error_from_dict(reply.get("error") or {"message": "the hub refused the command"}, default=FleetError)
    return reply["result"]


def _no_hub(exc: TelemetryError) -> FleetError:
    if exc.code != "telemetry.timeout":
        return error_from_dict(exc.to_dict(), default=FleetError)
    return FleetError(f"the fleet hub did not answer: {exc.message}", where=HUB_ID, code="fleet.no_hub",
                      hint="is `ganglion fleet serve` running against this broker?")
