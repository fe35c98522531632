"""The main job, ``python -m meshlib demo``: the mesh at work on local upstreams, nothing to set up.

``run`` drives the acts, ``resilience`` and ``consul`` are the later acts, ``view`` draws them
(rich, the only owner of it, with a plain-text fallback) and ``loadgen`` is the open-loop load
generator. An L4 entry package: it uses the public clients and the test upstreams.
"""

from meshlib.demo.run import (
    DemoOptions,
    add_arguments,
    run_demo,
)

__all__ = [
    "DemoOptions",
    "add_arguments",
    "run_demo",
]
