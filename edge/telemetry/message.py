"""What the MQTT adapter hands out and takes in, free of paho: a received ``Message`` (with its
MQTT 5 request/response properties and its manual ``ack``) and a Last ``Will``. Importable
without paho (commands.py, watch.py and tests build Messages by hand); ``edge.telemetry.mqtt``
re-exports both."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class Message:
    """A received message, with the MQTT 5 request/response properties we use.

    ``ack()`` acknowledges it on a ``manual_ack`` client (a no-op otherwise); ``dup`` is the
    broker's redelivery flag."""
    topic: str
    payload: bytes
    qos: int
    retain: bool
    response_topic: str | None = None
    correlation: bytes | None = None
    mid: int = 0
    dup: bool = False
    # True when response_topic/correlation came from the command's JSON (MQTT 3.1.1): the reply
    # then carries the correlation in its JSON too (commands.py)
    in_envelope: bool = False
    _acker: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def ack(self) -> None:
        if self._acker is not None:
            self._acker()
