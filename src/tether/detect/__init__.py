"""The behaviour detector: it reads the audit log after a durable cursor, learns what each
agent normally does (per-agent baselines), raises alerts when an agent does something else,
and applies the organisation's response policy (alert, suspend, kill).

The parts, top down:

* :mod:`tether.detect.runner` -- the job: one active detector per store (a store lock),
  reading events after its cursor; baselines, alerts, risk scores and the cursor commit
  in one transaction, so a restart neither loses nor repeats an alert.
* :mod:`tether.detect.response` -- the response policy (``[detect.response]``) and its
  circuit breaker; automatic actions are taken as ``system:detect``.
* :mod:`tether.detect.alerts` -- stored alerts, their states, who may change them, and
  their audit events (exported as OCSF Detection Finding, class 2004).
* :mod:`tether.detect.risk` -- each agent's risk score from its open alerts, and the
  ``risk`` decision input (``context.risk`` in Cedar).
* :mod:`tether.detect.engine` -- pure: events in, findings out, with the baselines
  (:mod:`~tether.detect.baseline`) and the detectors (:mod:`tether.detect.detectors`).
* :mod:`tether.detect.model` -- the values they pass each other.
"""
