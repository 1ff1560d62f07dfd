"""The access log: one JSON line per request (FLUXGATE_ACCESS_LOG), never blocking the loop.

A line is made when an exchange ends (dataplane/exchange.py ``_ended``) and
written straight onto the end of the current batch, one buffer (in C by
dataplane/_logline.pyx when it is built, else by msgspec here); the batch is
handed (50 ms after its first line, or at 4,096 lines) to a writer thread
that makes one ``write`` of it. A destination that stops
taking lines (a full pipe, a stuck disk) blocks only that thread: batches
beyond ``MAX_PENDING`` lines are dropped and counted (the meter's
``fluxgate_access_log_dropped_total``), requests never wait.

Fields: time (UTC, ms), request_id, client_ip, method, path (without the query
unless FLUXGATE_ACCESS_LOG_QUERY=true: queries carry tokens), status, bytes
(sent to the client), request_bytes (body received), duration_ms (from the
head's first byte), upstream (address:port, "" when the gateway answered),
upstream_ms, route (namespace/name), gateway, user_agent, trace_id (of the
W3C traceparent sent upstream: the client's, or while tracing is on the
tracer's, dataplane/tracing.py; "" without one). 2xx answers are sampled at
FLUXGATE_ACCESS_LOG_SAMPLE_2XX; every other status is logged.
"""

from __future__ import annotations

import os
import queue
import random
import sys
import threading
import time

import msgspec

from shm.schema import route_label

MAX_PENDING = 100_000  # lines handed to the writer and not yet written
# A batch goes to the writer this long after its first line, or at MAX_BATCH
# lines: one wake-up of the writer thread per batch, not per loop iteration
# (each wake-up is a GIL hand-over, measured at about 1 µs a request).
FLUSH_SECONDS = 0.05
MAX_BATCH = 4096
MAX_CACHED = 4096  # encoded upstreams, routes and gateways kept (each cache)
# ".000Z" … ".999Z": a line's milliseconds without formatting (the second's
# part is formatted once a second). Formatting and round() were a third of a
# line's cost.
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


class Line(msgspec.Struct):
    time: str
    request_id: str
    client_ip: str
    method: str
    path: str
    status: int
    bytes: int
    request_bytes: int
    duration_ms: float
    upstream: msgspec.Raw  # encoded once per value (AccessLog's caches)
    upstream_ms: float
    route: msgspec.Raw
    gateway: msgspec.Raw
    user_agent: str
    trace_id: str


_encode_into = msgspec.json.Encoder().encode_into
_now = time.time
_encode = msgspec.json.encode


def _append(batch: bytearray, stamp: bytes, millis: int, rid: bytes, client: bytes, method: bytes, target: bytes,
            status: int, sent: int, received: int, duration_us: int, upstream: bytes, upstream_us: int,
            route: bytes, gateway: bytes, ua: bytes, trace: bytes) -> None:
    """Append one line to ``batch`` (msgspec; the fallback of dataplane/_logline.pyx ``append``,
    which writes the same object in C). ``upstream``, ``route`` and ``gateway`` are
    encoded JSON strings; durations are whole microseconds."""
    if not 0 <= millis < 1000:
        raise ValueError("millis must be 0-999")
    _encode_into(Line(  # positional: the field order of Line
        stamp.decode("latin-1") + _MILLIS[millis], rid.decode("latin-1"), client.decode("latin-1"),
        method.decode("latin-1"), target.decode("latin-1"), status, sent, received, duration_us / 1000,
        msgspec.Raw(upstream), upstream_us / 1000, msgspec.Raw(route), msgspec.Raw(gateway),
        ua.decode("latin-1"), trace.decode("latin-1"),
    ), batch, -1)  # appended to the batch: no bytes object per line, no join
    batch += b"\n"


def _remember(cache: dict, key, text: str) -> bytes:
    """``text`` encoded as a JSON string, kept in ``cache`` under ``key`` (cleared once it
    holds more than MAX_CACHED: endpoints and routes come and go)."""
    if len(cache) > MAX_CACHED:
        cache.clear()
    encoded = cache[key] = _encode(text)
    return encoded


try:  # the compiled line (setup.py builds it with the NATIVE modules); not with FLUXGATE_NATIVE=false
    from dataplane._logline import append
except ImportError:
    append = _append


class AccessLog:
    __slots__ = ("fd", "query", "sample", "batch", "lines", "pending", "_loop", "_queue", "_thread",
                 "_lock", "_second", "_stamp", "_meter", "_routes", "_upstreams", "_gateways")

    def __init__(self, fd: int, loop, meter, *, query: bool = False, sample_2xx: float = 1.0) -> None:
        self.fd = fd
        self.query = query
        self.sample = sample_2xx
        self.batch = bytearray()  # lines, each ending in "\n"
        self.lines = 0  # in the batch
        self.pending = 0  # lines in batches the writer has not written yet
        self._loop = loop
        self._meter = meter
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="fluxgate-access-log", daemon=True)
        self._thread.start()
        self._second, self._stamp = -1, b""
        # Typed dicts in the compiled layout (accesslog.pxd): looked up without a method call.
        self._routes: dict[str, bytes] = {}  # an entry's source → its route label, encoded
        self._upstreams: dict[tuple, bytes] = {}  # an endpoint → "address:port", encoded
        self._gateways: dict[str, bytes] = {}  # a gateway's name → its name, encoded

    @classmethod
    def open(cls, settings, loop, meter) -> "AccessLog | None":
        """The log the settings ask for (None: off). Raises OSError for a file that cannot be opened."""
        where = settings.access_log
        if where == "off":
            return None
        if where == "stdout":
            fd = sys.stdout.fileno()
        elif where == "stderr":
            fd = sys.stderr.fileno()
        else:
            fd = os.open(where, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return cls(fd, loop, meter, query=settings.access_log_query, sample_2xx=settings.access_log_sample_2xx)

    # --- the loop's side -----------------------------------------------------------------

    def record(self, ex, status: int, seconds: float) -> None:
        if 200 <= status < 300 and self.sample < 1.0 and random.random() >= self.sample:
            return
        req = ex.req
        t = _now()
        second = int(t)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        if req is not None:
            target = req.target if self.query else req.path
            method, client, ua, trace = req.method, req.client, req.user_agent, req.traceparent
        else:
            target = method = client = ua = trace = b""
        # Upstream, route and gateway: encoded once per value, then looked up.
        endpoint = ex.endpoint
        upstream = b'""'
        if endpoint is not None and ex.sent_at:
            upstream = self._upstreams.get(endpoint)
            if upstream is None:
                upstream = _remember(self._upstreams, endpoint, f"{endpoint[0]}:{endpoint[1]}")
        source = ex.source
        route = self._routes.get(source)
        if route is None:
            route = _remember(self._routes, source, route_label(source))
        gateway = self._gateways.get(ex.gateway)
        if gateway is None:
            gateway = _remember(self._gateways, ex.gateway, ex.gateway)
        rid = ex.rid
        millis = int((t - second) * 1000) % 1000
        # Whole microseconds (truncated: 4x cheaper than round()).
        duration_us = int(seconds * 1e6)
        upstream_us = int(ex.upstream_s * 1e6)
        append(self.batch, self._stamp, millis, rid if rid else b"", client, method, target, status,
               ex.resp_bytes, ex.req_bytes, duration_us, upstream, upstream_us, route, gateway, ua,
               trace[3:35] if len(trace) >= 55 else b"")
        self.lines += 1
        if self.lines == 1:
            self._loop.call_later(FLUSH_SECONDS, self.flush)
        elif self.lines >= MAX_BATCH:
            self.flush()

    def flush(self) -> None:
        """Hand the batch to the writer."""
        n = self.lines
        if not n:
            return
        batch = self.batch
        self.batch, self.lines = bytearray(), 0
        with self._lock:
            if self.pending + n > MAX_PENDING:
                self._meter.access_log_dropped(n)  # fluxgate_access_log_dropped_total
                return
            self.pending += n
        self._queue.put((batch, n))

    def close(self, timeout: float = 2.0) -> None:
        """Write what is left (a worker's exit), waiting at most ``timeout``."""
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout)

    # --- the writer thread ------------------------------------------------------------

    def _write(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch, n = item
            data = memoryview(batch)
            while data:
                try:
                    data = data[os.write(self.fd, data):]
                except BlockingIOError:  # a non-blocking descriptor that is full: wait here
                    time.sleep(0.01)
                except OSError:
                    break  # the destination is gone: the lines are lost, the requests are not
            data.release()
            with self._lock:
                self.pending -= n
