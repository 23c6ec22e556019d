"""The progress bar of the per-sample loops (calibration, verify, per-layer comparison).

One place decides how progress is shown: click's bar on stderr (stdout stays clean for --json and
the report), or the plain items when progress is off (JSON output, library calls, the trial
builds of --auto-keep-float).
"""
from __future__ import annotations

import contextlib
import sys

import click


def bar(items, enabled: bool, label: str, **options):
    """A context manager yielding ``items``, through ``click.progressbar`` when ``enabled``."""
    if not enabled:
        return contextlib.nullcontext(items)
    return click.progressbar(items, label=label, file=sys.stderr, **options)
