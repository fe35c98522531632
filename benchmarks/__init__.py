"""meshlib's benchmark suite: ``python -m benchmarks`` (see ``benchmarks/README.md``).

Every scenario compares variants measured side by side in one run, each in its own worker
process, against servers started privately on 127.0.0.1, and reports medians and ratios.
"""

__all__: list[str] = []
