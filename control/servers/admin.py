"""The admin server (FLUXGATE_ADMIN_PORT, default 9090).

GET only, one request per connection, small bounded reads: it is for probes,
Prometheus and operators, never for traffic.

  /healthz         200 while the control loop runs
  /readyz          200 once every worker serves a table, else 503 and why
  /metrics         Prometheus text format, every worker aggregated
  /debug/config    the live table (generation, checksum, workers, table)
  /debug/status    per-object conditions from the last translation, and the
                   config errors that hold now (files and objects keeping
                   their last good version)
  /debug/workers   the supervisor's view of each worker
  /debug/route     which route, rule and backend a request would take, and why
                   (?host=…&path=…&method=…&port=…; other parameters are headers)
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest

from control.explain import ExplainError
from control.metrics import RunnerCollector

log = logging.getLogger("fluxgate.admin")

MAX_HEAD = 16 * 1024
READ_TIMEOUT = 5.0


class Admin:
    """Serves what ``state`` (the runner) knows; owns no state of its own.

    ``debug`` and ``collector`` let another process (``fluxgate controller``)
    serve its own: ``debug`` maps paths to functions returning JSON data (they
    replace the runner's /debug/* pages), ``collector`` is a Prometheus
    collector (it replaces the runner's metrics). /healthz, /readyz
    (``state.ready()``) and /metrics are always there.
    """

    def __init__(self, state, address: str, port: int, *,
                 debug: dict[str, Callable[[], object]] | None = None, collector=None) -> None:
        self.state = state
        self.address = address
        self.port = port
        self.server: asyncio.AbstractServer | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector if collector is not None else RunnerCollector(state))
        self.routes: dict[str, Callable[[dict], tuple[int, str, bytes]]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
        }
        if debug is None:
            self.routes.update({
                "/debug/config": lambda q: _json(200, state.debug_config()),
                "/debug/status": lambda q: _json(200, state.debug_status()),
                "/debug/workers": lambda q: _json(200, state.supervisor.describe()),
                "/debug/route": self._route,
            })
        else:
            for path, page in debug.items():
                self.routes[path] = lambda q, page=page: _json(200, page())

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._serve, self.address, self.port, reuse_address=True
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
                return
            if len(head) > MAX_HEAD:
                status, ctype, body = 431, "text/plain", b"request header too large\n"
            else:
                status, ctype, body = self._dispatch(head)
            writer.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                % (status, _REASONS.get(status, b"OK"), ctype.encode(), len(body)) + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _dispatch(self, head: bytes) -> tuple[int, str, bytes]:
        try:
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except ValueError:
            return 400, "text/plain", b"bad request\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        url = urlsplit(target)
        handler = self.routes.get(url.path)
        if handler is None:
            return 404, "text/plain", ("not found; try " + ", ".join(self.routes) + "\n").encode()
        try:
            return handler(parse_qs(url.query, keep_blank_values=True))
        except Exception:  # an admin bug must never take the gateway down
            log.exception("admin handler failed", extra={"fields": {"path": url.path}})
            return 500, "text/plain", b"internal error\n"

    def _healthz(self, q) -> tuple[int, str, bytes]:
        return 200, "text/plain", b"ok\n"

    def _readyz(self, q) -> tuple[int, str, bytes]:
        ok, why = self.state.ready()
        return (200 if ok else 503), "text/plain", (why + "\n").encode()

    def _route(self, q) -> tuple[int, str, bytes]:
        try:
            return _json(200, self.state.debug_route(q))
        except ExplainError as exc:
            return _json(400, {"error": str(exc)})

    def _metrics(self, q) -> tuple[int, str, bytes]:
        return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.registry)


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
            503: b"Service Unavailable"}


def _json(status: int, data) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(data, indent=1, default=str).encode() + b"\n"
