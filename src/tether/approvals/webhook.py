"""Notifications POSTed to a configured URL from a background thread, never in the way.

:class:`Webhook` queues JSON documents and one daemon thread sends them, each with a short
deadline and a few retries (with a growing pause); a failure is logged and counted
(``tether_webhook_failures_total``), never raised to whoever queued it, and a full queue
drops the newest notification (counted as ``tether_webhook_dropped_total``). Each POST
goes through the audit sinks' :class:`~tether.audit.poster.Poster`: one deadline for the
whole exchange and a capped answer, so a receiver can neither hold the thread nor fill
memory. Redirects are not followed (a 3xx is a failure): the URL is the admin's
configuration, and a redirect would send the body somewhere nobody configured. The body
must hold nothing secret (the caller's duty: approvals send the redacted arguments only).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from tether.audit.poster import Poster
from tether.metrics import Metrics

__all__ = ["Webhook"]

log = logging.getLogger("tether.webhook")

_QUEUE = 1000
_STOP = object()


class Webhook:
    """``Webhook(url, metrics).notify({...})``: sent soon, by one background thread."""

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        *,
        timeout: float = 3.0,
        attempts: int = 3,
        pause: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self._metrics = metrics
        self._timeout = timeout
        self._attempts = attempts
        self._pause = pause
        self._sleep = sleep
        self._queue: queue.Queue[Any] = queue.Queue(_QUEUE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def notify(self, body: dict[str, Any]) -> None:
        """Queue ``body`` to be POSTed; never blocks, never raises."""
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self._metrics.inc("tether_webhook_dropped_total")
            log.error("webhook queue full: a notification to %s was dropped", self.url)
            return
        self._start()

    def join(self, timeout: float = 10.0) -> bool:
        """Wait until every queued notification was sent or given up (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Stop the thread once what is queued is sent."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout=self._timeout * self._attempts + 1)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        poster = Poster(self.url, deadline=self._timeout)
        try:
            while True:
                body = self._queue.get()
                try:
                    if body is _STOP:
                        return
                    self._send(poster, body)
                finally:
                    self._queue.task_done()
        finally:
            poster.close()

    def _send(self, poster: Poster, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        why = ""
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(self._pause * attempt)
            try:
                status = poster.post(data, [("Content-Type", "application/json")])
            except Exception as exc:  # DeadlinePassed, the connection's errors: retried
                why = type(exc).__name__
                continue
            if 200 <= status < 300:
                self._metrics.inc("tether_webhook_sent_total")
                return
            why = f"HTTP {status}"
            if 300 <= status < 400:
                break  # not followed, not retried: the configured URL answers with a redirect
        self._metrics.inc("tether_webhook_failures_total")
        log.error("webhook %s failed after %d attempt(s): %s", self.url, attempt + 1, why)
