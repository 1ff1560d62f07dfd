"""A worker's meter: what each request, upstream attempt and connection adds to
the worker's region of the shared metrics segment (shm/metrics.py).

Hot path by design: a label set's record is found once (a dict lookup by a
key made of values the request already has: the route entry's source, the
method's bytes, the status class) and then counted with a few word
increments; labels are made only when a key is new. Label values are never
taken from the request: the method is one of the known ones or ``OTHER``,
the route is the matched route object's namespace/name ("" when none
matched), the gateway and backend come from the table.
"""

from __future__ import annotations

from bisect import bisect_left

from shm import metrics as m
from shm.schema import route_label

_METHODS = {x.encode(): x for x in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                                    "TRACE", "PATCH")}
_CLASSES = ("", "1xx", "2xx", "3xx", "4xx", "5xx")
BOUNDS = m.BOUNDS
_MAX_KEYS = 4 * m.MAX_RECORDS
_REQ_BYTES, _RESP_BYTES = m.REQ_BYTES, m.RESP_BYTES
_ACTIVE, _TOTAL, _BYTES_IN, _BYTES_OUT, _LOG_DROPPED = m.ACTIVE, m.TOTAL, m.BYTES_IN, m.BYTES_OUT, m.LOG_DROPPED
_SPANS_DROPPED = m.SPANS_DROPPED


class Meter:
    __slots__ = ("region", "words", "_records", "_keys", "_conn")

    def __init__(self, region: m.Region) -> None:
        self.region = region
        self.words = region.words
        self._records = region.claim()  # (kind, labels) → first value word
        for kind in (m.REQUEST, m.UPSTREAM, m.UPSTREAM_ERROR):
            self._record(kind, m.overflow_labels(kind))
        self._conn = self._record(m.CONNECTIONS, ())
        self.words[self._conn + _ACTIVE] = 0  # a predecessor's connections died with it
        self._keys: dict[tuple, int] = {}  # a request-side key → first value word

    def _record(self, kind: int, labels: tuple[str, ...]) -> int:
        first = self._records.get((kind, labels))
        if first is None:
            first = self.region.add(kind, labels)
            if first < 0:  # full: counted, exactly, without its labels
                self.words[self._conn + m.OVERFLOWED] += 1
                return self._records[(kind, m.overflow_labels(kind))]
            self._records[(kind, labels)] = first
        return first

    def _key(self, key: tuple, kind: int, labels: tuple[str, ...]) -> int:
        if len(self._keys) >= _MAX_KEYS:  # sources of many past generations: start over
            self._keys.clear()
        first = self._keys[key] = self._record(kind, labels)
        return first

    # --- per request ------------------------------------------------------------------

    def request(self, gateway: str, source: str, method: bytes, status: int, seconds: float,
                req_bytes: int, resp_bytes: int) -> None:
        cls = status // 100
        key = (gateway, source, method, cls)
        first = self._keys.get(key)
        if first is None:
            name = _METHODS.get(method)
            if name is None:  # the key holds only known methods: a client cannot grow it
                name, key = "OTHER", (gateway, source, b"OTHER", cls)
            first = self._key(key, m.REQUEST, (gateway, route_label(source), name,
                                               _CLASSES[cls] if 0 < cls < 6 else "other"))
        # self.words each time: compiled (dataplane/metrics.pxd), a typed
        # buffer, so each increment is one machine add.
        self.words[first] += 1
        if seconds > 0:
            self.words[first + 1] += int(seconds * 1e6)
        self.words[first + 2 + bisect_left(BOUNDS, seconds)] += 1
        self.words[first + _REQ_BYTES] += req_bytes
        self.words[first + _RESP_BYTES] += resp_bytes

    def upstream(self, source: str, backend: str, seconds: float) -> None:
        """One upstream attempt that got a whole response."""
        first = self._upstream(source, backend)
        self.words[first] += 1
        if seconds > 0:
            self.words[first + 1] += int(seconds * 1e6)
        self.words[first + 2 + bisect_left(BOUNDS, seconds)] += 1

    def retry(self, source: str, backend: str) -> None:
        self.words[self._upstream(source, backend) + m.RETRIES] += 1

    def upstream_error(self, source: str, backend: str, reason: str) -> None:
        """reason: refused, reset, timeout, tls."""
        key = (m.UPSTREAM_ERROR, source, backend, reason)
        first = self._keys.get(key)
        if first is None:
            first = self._key(key, m.UPSTREAM_ERROR, (route_label(source), backend, reason))
        self.words[first] += 1

    def _upstream(self, source: str, backend: str) -> int:
        key = (m.UPSTREAM, source, backend)
        first = self._keys.get(key)
        if first is None:
            first = self._key(key, m.UPSTREAM, (route_label(source), backend))
        return first

    # --- per connection -------------------------------------------------------------

    def opened(self) -> None:
        self.words[self._conn + _ACTIVE] += 1
        self.words[self._conn + _TOTAL] += 1

    def closed(self) -> None:
        if self.words[self._conn + _ACTIVE]:
            self.words[self._conn + _ACTIVE] -= 1

    def received(self, n: int) -> None:
        self.words[self._conn + _BYTES_IN] += n

    def sent(self, n: int) -> None:
        self.words[self._conn + _BYTES_OUT] += n

    def access_log_dropped(self, n: int) -> None:
        self.words[self._conn + _LOG_DROPPED] += n

    def spans_dropped(self, n: int) -> None:
        """``n`` sampled spans lost: the channel to the control process was full (dataplane/tracing.py)."""
        self.words[self._conn + _SPANS_DROPPED] += n
