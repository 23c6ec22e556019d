"""The scenarios of bench/daemon_bench.py, one module each (its docstring lists them)."""
