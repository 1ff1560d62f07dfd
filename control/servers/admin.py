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

/healthz, /readyz and /metrics answer every peer (probes and Prometheus come
from other pods). /debug/* shows the whole table and every object's status, so
it answers loopback peers (127.0.0.0/8, ::1, ::ffff:127.x) only, unless
FLUXGATE_DEBUG_TOKEN is set: then other peers get it with
``Authorization: Bearer <token>`` (compared in constant time), 401 without it;
with no token they get 403. A path under /debug/ is gated before it is looked
up, and the 404 list of routes leaves /debug/* out for a peer that may not see
it. The token is never logged nor shown on any page.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
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
DEBUG_PREFIX = "/debug/"


def is_loopback(peer) -> bool:
    """Whether a peer (``peername``: ``(host, port[, flow, scope])``, or a bare
    host) is this machine's loopback. Anything unparsable (a Unix socket's "",
    None) is not: the gate fails closed."""
    host = peer[0] if isinstance(peer, (tuple, list)) and peer else peer
    if not isinstance(host, str):
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return False
    # A dual-stack socket ("::") sees IPv4 clients as ::ffff:a.b.c.d.
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _address_is_loopback(address: str) -> bool:
    """Whether binding ``address`` keeps the admin server on loopback ("" and
    hostnames other than localhost may be reachable from elsewhere)."""
    return address == "localhost" or is_loopback(address)


def _headers(head: bytes) -> dict[str, list[str]]:
    """Header fields of a request head, by lower-case name (all values of a repeated one)."""
    out: dict[str, list[str]] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name and name == name.strip():  # "name :" is malformed (RFC 9112 5.1)
            out.setdefault(name.decode("latin-1").lower(), []).append(value.strip().decode("latin-1"))
    return out


class Admin:
    """Serves what ``state`` (the runner) knows; owns no state of its own.

    ``debug`` and ``collector`` let another process (``fluxgate controller``)
    serve its own: ``debug`` maps paths to functions returning JSON data (they
    replace the runner's /debug/* pages), ``collector`` is a Prometheus
    collector (it replaces the runner's metrics). /healthz, /readyz
    (``state.ready()``) and /metrics are always there.
    """

    def __init__(self, state, address: str, port: int, *,
                 debug: dict[str, Callable[[], object]] | None = None, collector=None,
                 debug_token: str = "") -> None:
        self.state = state
        self.address = address
        self.port = port
        self._debug_token = debug_token.encode()  # bytes: compare_digest takes any, str only ASCII
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

    def __repr__(self) -> str:  # never the token, should an Admin end up in a log
        return f"Admin({self.address}:{self.port}, debug_token={'set' if self._debug_token else 'unset'})"

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._serve, self.address, self.port, reuse_address=True
        )
        if not _address_is_loopback(self.address):
            # Say which, so an operator exposing the port knows what others can read.
            fields = {"address": f"{self.address}:{self.port}"}
            if self._debug_token:
                log.info("admin server: /debug/* answers loopback, and other addresses with the bearer"
                         " token FLUXGATE_DEBUG_TOKEN", extra={"fields": fields})
            else:
                log.info("admin server: /debug/* answers loopback only (set FLUXGATE_DEBUG_TOKEN to"
                         " open it to other addresses with a bearer token)", extra={"fields": fields})

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
                return
            extra = b""
            if len(head) > MAX_HEAD:
                status, ctype, body = 431, "text/plain", b"request header too large\n"
            else:
                status, ctype, body, extra = self._dispatch(head, writer.get_extra_info("peername"))
            writer.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n%s\r\n"
                % (status, _REASONS.get(status, b"OK"), ctype.encode(), len(body), extra) + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _dispatch(self, head: bytes, peer) -> tuple[int, str, bytes, bytes]:
        """(status, content type, body, extra header lines) for one request head."""
        try:
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except ValueError:
            return 400, "text/plain", b"bad request\n", b""
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n", b""
        url = urlsplit(target)
        debug_ok = is_loopback(peer) or self._bearer_ok(head)
        if url.path.startswith(DEBUG_PREFIX) and not debug_ok:
            if not self._debug_token:
                return 403, "text/plain", (b"/debug/* answers loopback only unless FLUXGATE_DEBUG_TOKEN"
                                           b" is set\n"), b""
            return (401, "text/plain", b"/debug/* needs Authorization: Bearer <FLUXGATE_DEBUG_TOKEN>\n",
                    b"www-authenticate: Bearer\r\n")
        handler = self.routes.get(url.path)
        if handler is None:
            shown = [r for r in self.routes if debug_ok or not r.startswith(DEBUG_PREFIX)]
            return 404, "text/plain", ("not found; try " + ", ".join(shown) + "\n").encode(), b""
        try:
            return (*handler(parse_qs(url.query, keep_blank_values=True)), b"")
        except Exception:  # an admin bug must never take the gateway down
            log.exception("admin handler failed", extra={"fields": {"path": url.path}})
            return 500, "text/plain", b"internal error\n", b""

    def _bearer_ok(self, head: bytes) -> bool:
        """The request carries ``Authorization: Bearer <the debug token>`` (no token set: never)."""
        if not self._debug_token:
            return False
        values = _headers(head).get("authorization", [])
        if len(values) != 1:  # none, or several: which one would count is ambiguous
            return False
        scheme, _, credentials = values[0].partition(" ")
        if scheme.lower() != "bearer":  # the scheme is case-insensitive (RFC 9110 11.1)
            return False
        # Constant time: how much of a guess matched must not show in the answer's timing.
        return hmac.compare_digest(credentials.strip().encode("latin-1"), self._debug_token)

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


_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
            404: b"Not Found", 405: b"Method Not Allowed",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
            503: b"Service Unavailable"}


def _json(status: int, data) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(data, indent=1, default=str).encode() + b"\n"
