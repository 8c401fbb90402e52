"""The webhook receiver Alertmanager delivers to in the stack test: an HTTP server in the test
process, bound on every interface so that the containers reach it through the host gateway."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Delivery:
    """One alert of one webhook notification, as it arrived."""

    at: float  # time.time() on arrival
    name: str
    labels: str  # all of them, to tell apart the alerts of one name (one per queue, ...)
    status: str  # firing | resolved


class AlertReceiver:
    """Records every alert Alertmanager's webhook delivers, in order of arrival."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.record(json.loads(body).get("alerts", []))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def record(self, alerts: list[dict[str, object]]) -> None:
        """Keep the alerts of one notification."""
        now = time.time()
        with self._lock:
            for alert in alerts:
                labels = alert.get("labels")
                labels = labels if isinstance(labels, dict) else {}
                self.deliveries.append(
                    Delivery(
                        now,
                        str(labels.get("alertname", "?")),
                        json.dumps(labels, sort_keys=True),
                        str(alert.get("status")),
                    )
                )

    def mark(self) -> int:
        """A point in the deliveries: what arrives later is ``since`` it."""
        with self._lock:
            return len(self.deliveries)

    def firing_since(self, mark: int) -> set[str]:
        """Names of the alerts delivered as firing after ``mark``."""
        with self._lock:
            return {d.name for d in self.deliveries[mark:] if d.status == "firing"}

    def still_firing(self) -> set[str]:
        """Names whose last delivery says firing: Alertmanager has not told the end of them."""
        last: dict[str, Delivery] = {}
        with self._lock:
            for delivery in self.deliveries:
                last[delivery.labels] = delivery
        return {d.name for d in last.values() if d.status == "firing"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
