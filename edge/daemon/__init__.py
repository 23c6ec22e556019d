"""The supervised inference daemon behind ``ganglion run`` (see docs/daemon.md).

    config.py    the TOML schema (frozen dataclasses) and flag merging
    tree.py      the supervision tree: the one place it is wired
    app.py       Daemon: queues, pool, sinks, telemetry; submit / start / run / shutdown
    worker.py    the model worker process;  wire.py  its framing (no pickle)
    pool.py      worker slots, dispatchers, retry-once
    lane.py      workers that read a watched folder and write file sinks themselves
    batcher.py   bounded request queue with backpressure; dynamic micro-batching
    sources.py   folder, mqtt, replay, camera;  decode.py  payload formats
    sinks.py     jsonl, stdout, mqtt, and the result router
    metrics.py   latency percentiles, throughput, CPU, RSS, temperature
    commands.py  reload, config.get/set, deploy over telemetry
    sdnotify.py  systemd READY / WATCHDOG and the unit file
    cli.py       ``ganglion run`` and ``ganglion bench``

Kept import-light: worker processes import this package on start.
"""
