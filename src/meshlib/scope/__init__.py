"""Per-call policy and deadlines carried in ``contextvars`` to every mesh request in a scope.

``@meshlib.outbound`` and the inbound middleware set them; the pipeline reads them when a call
starts. Imports L0 modules and ``retry`` (a policy may carry its own budget): L1.
"""

from meshlib.scope.context import (
    DEADLINE_HEADER,
    CallPolicy,
    Deadline,
    current_deadline,
    current_policy,
    deadline_scope,
    format_deadline,
    parse_deadline,
    policy_scope,
)

__all__ = [
    "DEADLINE_HEADER",
    "CallPolicy",
    "Deadline",
    "current_deadline",
    "current_policy",
    "deadline_scope",
    "format_deadline",
    "parse_deadline",
    "policy_scope",
]
