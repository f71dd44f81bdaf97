"""Human approval of held calls (issue 17): the service (:mod:`.service`), one approval
and its events (:mod:`.record`), and a call's digest and redacted arguments
(:mod:`.arguments`). See :mod:`tether.approvals.service` for the rules."""

from tether.approvals.arguments import UNDIGESTABLE, call_digest, redact_arguments
from tether.approvals.record import APPROVERS, STATES, Approval
from tether.approvals.service import MAX_LIMIT, Approvals

__all__ = [
    "APPROVERS",
    "MAX_LIMIT",
    "STATES",
    "UNDIGESTABLE",
    "Approval",
    "Approvals",
    "call_digest",
    "redact_arguments",
]
