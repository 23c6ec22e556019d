"""Fleet errors: what can go wrong between an operator, the hub and its database.

    GanglionError (core.errors)
    ├── UsageError                 usage.*          bad flags (--to, --waves, --max-failures)   exit 2
    ├── FleetError                 fleet.*          the hub refused or failed a request          exit 6
    │   ├── UnknownDeploymentError fleet.unknown_deployment
    │   ├── DeploymentStateError   fleet.state      pause a finished deployment, ...
    │   └── NoTargetsError         fleet.no_targets --to matched no known device
    └── StoreError                 fleet.store      the SQLite database cannot be opened/migrated exit 6

A hub error travels to the CLI as a command reply (``to_dict()``) and is rebuilt there with
``core.errors.error_from_dict``; the CLI maps it to one message and the exit code above.
"""
from __future__ import annotations

from core.errors import TelemetryError


class FleetError(TelemetryError):
    code = "fleet.error"


class UnknownDeploymentError(FleetError):
    code = "fleet.unknown_deployment"


class DeploymentStateError(FleetError):
    code = "fleet.state"


class NoTargetsError(FleetError):
    code = "fleet.no_targets"


class StoreError(FleetError):
    code = "fleet.store"
